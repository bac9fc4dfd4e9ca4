//! Counts heap allocations made by `normalize`: none on the fast path, at most
//! two otherwise. A separate test binary, because it installs a global
//! allocator; the counter is per thread so parallel tests do not disturb it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use rempart::path::{normalize, PathMode};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn record() {
    // `try_with` because the allocator may run while the thread is torn down.
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record();
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record();
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations made by one call (results dropped after counting).
fn allocations(raw: &str, mode: PathMode) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    let result = normalize(raw, mode);
    let after = ALLOCATIONS.with(Cell::get);
    drop(result);
    after - before
}

#[test]
fn fast_path_allocates_nothing() {
    for raw in [
        "/",
        "/auth/login",
        "/ent/api/messages",
        "/ent/api/messages/",
        "/static/app-1.2.3.min.js",
        "*",
    ] {
        for mode in [PathMode::Strict, PathMode::Permissive, PathMode::Off] {
            assert_eq!(allocations(raw, mode), 0, "{raw:?} in {mode} mode");
        }
    }
    // Off mode never allocates, whatever the path.
    assert_eq!(allocations("//a/../%zz;x", PathMode::Off), 0);
}

#[test]
fn parameters_alone_allocate_only_the_route_key() {
    assert_eq!(allocations("/auth;jsessionid=1/login", PathMode::Strict), 1);
    assert_eq!(allocations("/app/;jsessionid=ABC", PathMode::Strict), 1);
}

#[test]
fn canonical_escapes_allocate_once() {
    assert_eq!(allocations("/%C3%A9l%C3%A8ves", PathMode::Strict), 1);
}

#[test]
fn slow_path_allocates_at_most_twice() {
    let samples = [
        "//auth/login",
        "/x/../auth/login",
        "/./auth/login",
        "/%61uth/login",
        "/auth//login",
        "/a/../%62/./page",
        "/auth;jsessionid=1//login",
        "/x/..;/auth/login",
        "/../../etc",
        "/a/b/..",
        "/caf%c3%a9",
        "/café/élèves/ünï",
        "/a b?c#d",
        "/%zz%4%",
        "/a\\b\r\n\0",
        "/%%34%31%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%",
        "/ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé/..",
    ];
    for raw in samples {
        for mode in [PathMode::Strict, PathMode::Permissive] {
            let count = allocations(raw, mode);
            assert!(count <= 2, "{raw:?} in {mode} mode: {count} allocations");
        }
    }
}

#[test]
fn rejections_allocate_at_most_once() {
    for raw in [
        "",
        "auth",
        "/a%2Fb",
        "/a%zz",
        "/a\\b",
        "/..;/x",
        "/a/b/c%00",
    ] {
        assert!(allocations(raw, PathMode::Strict) <= 1, "{raw:?}");
    }
}
