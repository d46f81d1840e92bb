//! The `bootherd` binary: see [`bootherd::cli`].

fn main() -> std::process::ExitCode {
    bootherd::cli::main(std::env::args_os())
}
