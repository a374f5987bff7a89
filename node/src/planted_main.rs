//! `wharf-planted`: the `wharf` command with the planted bugs compiled in (feature
//! `planted-bugs`), for `wharf-chaos` to show that its checkers catch them. Never ship it.

/// The same allocator as `wharf` (see main.rs).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    wharf_node::cli::run()
}
