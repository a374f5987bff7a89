//! The `wharf` command; it lives in the library, as `wharf_node::cli`.

/// jemalloc returns freed memory to the system (its background threads purge dirty pages
/// after a few seconds); with glibc's malloc, what sled and snapshot builds freed stayed in
/// the node's RSS.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    wharf_node::cli::run()
}
