//! Things the daemon made once and takes as they are while they are fresh
//! enough: journal summaries, machines' pages. One maker at a time per key:
//! a page asked by fifty operators at once is made once, the others wait
//! for it and take it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use super::lock;

type Entry<V> = Arc<Mutex<Option<V>>>;

pub(super) struct Kept<K, V> {
    entries: Mutex<HashMap<K, Entry<V>>>,
}

impl<K, V> Default for Kept<K, V> {
    fn default() -> Self {
        Kept { entries: Mutex::default() }
    }
}

impl<K: Eq + Hash + Clone, V> Kept<K, V> {
    /// `read` of the value kept for `key` if `fresh` says it still is,
    /// otherwise of the one `make` makes from it (kept for the next).
    pub(super) fn with<T, E>(
        &self,
        key: &K,
        fresh: impl FnOnce(&V) -> bool,
        make: impl FnOnce(Option<V>) -> Result<V, E>,
        read: impl FnOnce(&V) -> T,
    ) -> Result<T, E> {
        let entry = lock(&self.entries).entry(key.clone()).or_default().clone();
        let mut kept = lock(&entry);
        if let Some(value) = kept.as_ref().filter(|value| fresh(value)) {
            return Ok(read(value));
        }
        let value = make(kept.take())?;
        let result = read(&value);
        *kept = Some(value);
        Ok(result)
    }

    /// Forgets the values `keep` does not keep, once more than `most` are
    /// kept (a value being made stays).
    pub(super) fn sweep(&self, most: usize, keep: impl Fn(&V) -> bool) {
        let mut entries = lock(&self.entries);
        if entries.len() <= most {
            return;
        }
        entries.retain(|_, entry| match entry.try_lock() {
            Ok(value) => value.as_ref().is_some_and(&keep),
            Err(_) => true,
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.entries).len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn a_fresh_value_is_taken_a_stale_one_made_again_from_it() {
        let kept: Kept<&str, u32> = Kept::default();
        let made = |previous: Option<u32>| Ok::<_, ()>(previous.unwrap_or(0) + 1);
        assert_eq!(kept.with(&"a", |_| true, made, |v| *v), Ok(1));
        assert_eq!(kept.with(&"a", |_| true, made, |v| *v), Ok(1), "fresh: taken as it is");
        assert_eq!(kept.with(&"a", |_| false, made, |v| *v), Ok(2), "stale: made again from the kept one");
        assert_eq!(kept.with(&"b", |_| true, made, |v| *v), Ok(1), "each key its own");
    }

    #[test]
    fn a_value_that_could_not_be_made_is_not_kept() {
        let kept: Kept<&str, u32> = Kept::default();
        assert_eq!(kept.with(&"a", |_| true, |_| Err("no"), |v| *v), Err("no"));
        assert_eq!(kept.with(&"a", |_| true, |_| Ok::<_, &str>(7), |v| *v), Ok(7));
    }

    /// Many asking at once for a value that is not there: made once.
    #[test]
    fn callers_at_once_wait_for_one_maker() {
        let kept: Kept<&str, u32> = Kept::default();
        let makers = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    let make = |_| {
                        makers.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        Ok::<_, ()>(1)
                    };
                    assert_eq!(kept.with(&"a", |_| true, make, |v| *v), Ok(1));
                });
            }
        });
        assert_eq!(makers.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_sweep_forgets_what_is_not_kept_once_there_are_too_many() {
        let kept: Kept<u32, u32> = Kept::default();
        for key in 0..10 {
            kept.with(&key, |_| true, |_| Ok::<_, ()>(key), |_| ()).unwrap();
        }
        kept.sweep(20, |v| v % 2 == 0);
        assert_eq!(kept.len(), 10, "not more than most: nothing forgotten");
        kept.sweep(5, |v| v % 2 == 0);
        assert_eq!(kept.len(), 5);
        assert_eq!(kept.with(&3, |_| true, |_| Ok::<_, ()>(30), |v| *v), Ok(30), "forgotten, so made again");
    }
}
