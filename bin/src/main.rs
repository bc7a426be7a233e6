//! The `canaryflow` command.

fn main() -> std::process::ExitCode {
    canaryflow::main()
}
