use std::process::ExitCode;

use clap::Parser;
use ims_operator::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", ims_operator::crdgen::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Simulate(args) => ims_operator::simulate::main(args),
        Command::Run(args) => ims_operator::controller::main(args),
    }
}
