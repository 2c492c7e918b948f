//! `ims-operator run`.
use std::process::ExitCode;

use crate::cli::RunArgs;

pub fn main(_args: RunArgs) -> ExitCode {
    eprintln!("ims-operator run: the controller is not part of this build yet; use `ims-operator simulate`");
    ExitCode::from(2)
}
