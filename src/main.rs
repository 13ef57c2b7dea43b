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
            // One line naming the flag; the full usage is one `--help` away.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            eprintln!("ringnode: {first} (see --help)");
            std::process::exit(2);
        }
    };
    if let Err(f) = ringnode::cli::run(cli) {
        eprintln!("ringnode: {}", f.message);
        std::process::exit(f.code);
    }
}
