//! The `wharf` command; it lives in the library, as `wharf_node::cli`.

fn main() -> anyhow::Result<()> {
    wharf_node::cli::main()
}
