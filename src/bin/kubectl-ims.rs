//! `kubectl-ims`: the kubectl plugin (`kubectl ims ...`); everything is in the library's
//! `plugin` module.

fn main() -> std::process::ExitCode {
    ims_operator::plugin::main()
}
