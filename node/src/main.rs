//! The `wharf` command; it lives in the library, as `wharf_node::cli`.

fn main() -> std::process::ExitCode {
    wharf_node::cli::run()
}
