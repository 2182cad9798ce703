//! The daemon's memory allocator ([`Allocator`], installed by `main.rs`): mimalloc for
//! small blocks, glibc's malloc, bounded, for large ones.
//!
//! Measured with the bench (`docs/PERFORMANCE.md`): a cold `ls -l` of 100,000 entries spent
//! a fifth of the daemon's CPU in glibc's malloc and free (the S3 client allocates many
//! small blocks per request); mimalloc took 20–28% off that listing's time. But mimalloc
//! alone kept freed large buffers (1 MiB read blocks, 8 MiB upload parts) resident: the
//! read mount peaked 50 MiB higher, the fio mounts 30 MiB. So each allocator does what it
//! does best, chosen by size alone — the same size that allocates a block also frees or
//! resizes it (`GlobalAlloc`'s contract), so every block returns to the allocator it came
//! from.

use std::alloc::{GlobalAlloc, Layout, System};

use mimalloc::MiMalloc;

/// Blocks of this size and more come from glibc's malloc (the system allocator).
const LARGE: usize = 64 << 10;

/// See the module documentation.
pub struct Allocator;

impl Allocator {
    /// glibc's defaults let a mount's RSS grow far past what it holds: an arena per thread
    /// that allocated (tokio's workers and blocking threads), each keeping what was freed in
    /// it. Two arenas make the 1 MiB read blocks and 8 MiB upload parts reuse each other's
    /// memory; a fixed mmap threshold (setting one turns off glibc's rising one) keeps them
    /// in the heap, where reuse is cheap: mapping each block cost a fifth of cold read speed
    /// in page faults, mapping each part about a tenth of write speed. Measured by the bench
    /// on a 1 GiB file (3 runs): peak RSS writing 104 -> 71-103 MiB, reading cold + warm
    /// 148 -> 109-115 MiB. Call first thing in `main`, before any other thread exists.
    pub fn bound_large_blocks() {
        #[cfg(target_env = "gnu")]
        // SAFETY: mallopt only sets allocator parameters; the caller runs it before any other
        // thread exists, so nothing allocates through glibc concurrently.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
        }
    }
}

fn is_large(size: usize) -> bool {
    size >= LARGE
}

/// The allocator that serves blocks of `size` bytes: the one decision, for every call.
fn serving(size: usize) -> &'static dyn GlobalAlloc {
    if is_large(size) { &System } else { &MiMalloc }
}

// SAFETY: every call is passed on unchanged to one of two sound allocators, chosen by the
// block's size; a block is always freed or resized with the layout it was allocated (or
// last resized) with, so it goes back to the allocator that made it. A resize that crosses
// the threshold allocates in the other, copies and frees, as the default `realloc` does.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { serving(layout.size()).alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        unsafe { serving(layout.size()).alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated with `layout`, so by the allocator `layout` selects.
        unsafe { serving(layout.size()).dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if is_large(layout.size()) == is_large(new_size) {
            // SAFETY: both sizes belong to the allocator that made `ptr`: passed on.
            return unsafe { serving(new_size).realloc(ptr, layout, new_size) };
        }
        // SAFETY: `realloc`'s contract makes `new_size` with `layout.align()` a valid layout;
        // the new block is fresh, so the two cannot overlap, and `ptr` is freed with the
        // layout it was allocated with.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks that grow and shrink across the threshold keep their bytes and go back to
    /// the allocator that made them (a mismatch would crash or corrupt under either).
    #[test]
    fn blocks_resized_across_the_threshold_keep_their_bytes() {
        let a = Allocator;
        for align in [1, 16, 4096] {
            let small = Layout::from_size_align(1000, align).unwrap();
            // SAFETY: layouts are non-zero-sized; each block is used within its size and
            // freed once with its current layout.
            unsafe {
                let p = a.alloc(small);
                assert!(!p.is_null());
                for i in 0..1000 {
                    *p.add(i) = (i % 251) as u8;
                }
                let big = a.realloc(p, small, LARGE * 4);
                assert!(!big.is_null());
                assert_eq!(big as usize % align, 0);
                assert!((0..1000).all(|i| *big.add(i) == (i % 251) as u8));
                let big_layout = Layout::from_size_align(LARGE * 4, align).unwrap();
                let grown = a.realloc(big, big_layout, LARGE * 8);
                assert!((0..1000).all(|i| *grown.add(i) == (i % 251) as u8));
                let grown_layout = Layout::from_size_align(LARGE * 8, align).unwrap();
                let back = a.realloc(grown, grown_layout, 500);
                assert!((0..500).all(|i| *back.add(i) == (i % 251) as u8));
                a.dealloc(back, Layout::from_size_align(500, align).unwrap());
                let z = a.alloc_zeroed(big_layout);
                assert!((0..LARGE * 4).all(|i| *z.add(i) == 0));
                a.dealloc(z, big_layout);
            }
        }
    }
}
