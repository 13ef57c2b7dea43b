//! The `ringnode` binary: parses the command line and maps failures to one line and an exit code.

use clap::Parser;

fn main() {
    let cli = match ringnode::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                std::process::exit(if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand { 2 } else { 0 });
            }
            // One line naming the flag; the full usage is one `--help` away. Clap puts the names
            // of missing arguments on the lines after the first: fold them in.
            let text = e.to_string();
            let message: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:"))
                .map(|l| l.trim().trim_start_matches("error: "))
                .collect();
            let line = if message.is_empty() { "invalid arguments".to_string() } else { message.join(" ") };
            // Asked for JSON on stderr (even if the command line failed to parse otherwise)?
            let args: Vec<String> = std::env::args().collect();
            let json = args.windows(2).any(|w| w[0] == "--log-format" && w[1] == "json")
                || args.iter().any(|a| a == "--log-format=json");
            fail(json, &format!("{line} (see --help)"), 2);
        }
    };
    let json = cli.log_format == ringnode::cli::LogFormat::Json;
    if let Err(f) = ringnode::cli::run(cli) {
        fail(json, &f.message, f.code);
    }
}

/// Says why the process fails — one line, or in JSON mode one JSON object like everything else on
/// stderr, written directly so that no `RUST_LOG` filter can hide it — and exits with `code`.
fn fail(json: bool, message: &str, code: i32) -> ! {
    if json {
        let v = serde_json::json!({
            "level": "ERROR",
            "fields": { "message": message, "exit_code": code },
            "target": "ringnode",
        });
        eprintln!("{v}");
    } else {
        eprintln!("ringnode: {message}");
    }
    std::process::exit(code);
}
