//! `wharf-planted`: the `wharf` command with the planted bugs compiled in (feature
//! `planted-bugs`), for `wharf-chaos` to show that its checkers catch them. Never ship it.

fn main() -> std::process::ExitCode {
    wharf_node::cli::run()
}
