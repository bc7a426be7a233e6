//! The `canaryflow` command, built inside the test package so that tests
//! always run the code they were compiled with.

fn main() -> std::process::ExitCode {
    canaryflow::main()
}
