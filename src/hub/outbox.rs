//! Per-connection bookkeeping shared between a session and the hub, so the
//! hub can enforce the slow-consumer limit without waiting on the session.
//!
//! A session whose client stops reading freezes (its actor runs only while
//! the socket is writable), so the hub must detect it from outside, by the
//! unsent output counted here, and end it by shutting its socket down.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Frames and bytes queued for one connection and not yet handed to its socket.
#[derive(Debug)]
pub struct Outbox {
    frames: AtomicUsize,
    bytes: AtomicUsize,
    max_frames: usize,
    max_bytes: usize,
}

impl Outbox {
    pub fn new(max_frames: usize, max_bytes: usize) -> Self {
        Outbox {
            frames: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_frames,
            max_bytes,
        }
    }

    /// Counts frames about to be queued; `false` (and nothing counted) when
    /// the connection's unsent output has already reached its limit.
    ///
    /// The check is on what is *already* pending, not on the new delivery: a
    /// group commit may publish thousands of frames at once, and a reader
    /// that has caught up must be able to take such a burst.
    pub fn reserve(&self, frames: usize, bytes: usize) -> bool {
        let f = self.frames.fetch_add(frames, Ordering::AcqRel);
        let b = self.bytes.fetch_add(bytes, Ordering::AcqRel);
        if f >= self.max_frames || b >= self.max_bytes {
            self.release(frames, bytes);
            return false;
        }
        true
    }

    /// The session has written these frames to its socket buffer.
    pub fn release(&self, frames: usize, bytes: usize) {
        self.frames.fetch_sub(frames, Ordering::AcqRel);
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    pub fn pending(&self) -> (usize, usize) {
        (
            self.frames.load(Ordering::Acquire),
            self.bytes.load(Ordering::Acquire),
        )
    }
}

/// The connection's socket, so a frozen session can be ended from outside.
///
/// Holds the raw descriptor (a duplicate would double the descriptors per
/// connection, and 10,000 connections must fit in 20,000). The session
/// forgets it in `stopped`, which actix runs before the connection's socket
/// is dropped, so a shut-down never reaches a reused descriptor.
#[derive(Debug, Default)]
pub struct Socket {
    fd: Mutex<Option<RawFd>>,
}

impl Socket {
    pub fn new(fd: Option<RawFd>) -> Self {
        Socket { fd: Mutex::new(fd) }
    }

    /// Shuts the TCP connection down both ways: the dispatcher then sees an
    /// error and drops the session.
    pub fn shutdown(&self) {
        let guard = self.fd.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fd) = *guard {
            // SAFETY: the descriptor is open while `fd` is Some (see type docs);
            // shutdown(2) does not close it or touch memory.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
        }
    }

    /// The connection is going away: never touch the descriptor again.
    pub fn forget(&self) {
        *self.fd.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_respects_both_limits() {
        let o = Outbox::new(3, 100);
        // A burst larger than the limit passes when nothing is pending.
        assert!(o.reserve(5, 10));
        assert!(!o.reserve(1, 1));
        o.release(5, 10);
        assert!(o.reserve(2, 10));
        assert!(o.reserve(1, 10));
        // Three frames pending: at the limit, nothing more.
        assert!(!o.reserve(1, 1));
        o.release(3, 20);
        assert_eq!(o.pending(), (0, 0));
        assert!(o.reserve(1, 100));
        // A hundred bytes pending: at the byte limit.
        assert!(!o.reserve(1, 1));
    }
}
