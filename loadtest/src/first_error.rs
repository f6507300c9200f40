//! [`FirstError`]: the first error of many concurrent clients. A report
//! shows one example of what went wrong (its counters say how often), not
//! thousands of lines.

use std::fmt::Display;
use std::sync::Mutex;

/// Keeps the first error noted by any task; later ones are dropped.
#[derive(Debug, Default)]
pub struct FirstError(Mutex<Option<String>>);

impl FirstError {
    /// Keeps `e` if no error was noted before (`{e:#}` for an
    /// `anyhow::Error` keeps its causes).
    pub fn note(&self, e: impl Display) {
        let mut first = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(e.to_string());
        }
    }

    /// The first error noted, if any.
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first() {
        let f = FirstError::default();
        assert_eq!(f.get(), None);
        f.note("one");
        f.note(format_args!("{}", "two"));
        assert_eq!(f.get().as_deref(), Some("one"));
    }
}
