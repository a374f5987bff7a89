//! `wharf-planted`: the `wharf` command with the planted bugs compiled in (feature
//! `planted-bugs`), for `wharf-chaos` to show that its checkers catch them. Never ship it.

fn main() -> anyhow::Result<()> {
    wharf_node::cli::main()
}
