use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = lodestone::cli::Cli::parse();
    match lodestone::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
