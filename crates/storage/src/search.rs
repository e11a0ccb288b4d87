//! Planning the `query` filter: which trigrams to look up.
//!
//! A substring search is answered from a trigram index: every trigram of
//! the query occurs in each match, so the users holding all of them are the
//! candidates, and `LIKE` then keeps the exact matches. Looking up every
//! trigram is wasteful when some are common: in `seed0001234`, `see` and
//! `eed` occur in every seeded user, and reading their postings costs more
//! than the rest of the query. So the store estimates how often each
//! trigram occurs from a sample of users and looks up only the rarest few.
//! Any subset of the query's trigrams gives the same result (LIKE decides);
//! the sample only decides the cost.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most trigrams looked up per query: beyond three, each additional
/// posting list costs more than it narrows.
pub const MAX_TRIGRAMS: usize = 3;

/// How long a sample is used before it is taken again.
pub const SAMPLE_LIFETIME: Duration = Duration::from_mins(10);

/// How long a sample of fewer users than it asked for is used: the table
/// was small, sampling it again is cheap, and it may be filling up.
pub const SMALL_SAMPLE_LIFETIME: Duration = Duration::from_secs(30);

/// Points in the creation-time range the sample reads from, and users read
/// at each: a sample of up to 2 000 users spread over the whole table.
pub const SAMPLE_POINTS: usize = 20;
pub const SAMPLE_USERS_PER_POINT: usize = 100;

/// The distinct trigrams (three consecutive characters) of `text`, in
/// order of first occurrence.
pub fn trigrams(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out: Vec<String> = Vec::new();
    for window in chars.windows(3) {
        let trigram: String = window.iter().collect();
        if !out.contains(&trigram) {
            out.push(trigram);
        }
    }
    out
}

/// How many sampled users' search texts hold each trigram.
#[derive(Debug, Default)]
pub struct TrigramSample {
    users: usize,
    counts: HashMap<String, u32>,
}

impl TrigramSample {
    /// Counts the trigrams of sampled search texts.
    pub fn new<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut sample = Self::default();
        for text in texts {
            sample.users += 1;
            for trigram in trigrams(text) {
                *sample.counts.entry(trigram).or_default() += 1;
            }
        }
        sample
    }

    /// Sampled users.
    pub fn users(&self) -> usize {
        self.users
    }

    /// Whether `window` users may hold `wanted` matches of `query`, by the
    /// sample: a match holds every trigram of the query, so no more users
    /// match than hold its least frequent one. True when the sample cannot
    /// tell (no sample, or a query without trigrams).
    pub fn may_hold(&self, query: &str, wanted: usize, window: usize) -> bool {
        let least = trigrams(query)
            .iter()
            .map(|t| self.counts.get(t).copied().unwrap_or(0))
            .min();
        match least {
            Some(count) if self.users > 0 => {
                // count / users of the window's users, at most: compared
                // in integers, count × window ≥ wanted × users.
                u64::from(count) * window as u64 >= (wanted as u64) * (self.users as u64)
            }
            _ => true,
        }
    }

    /// The query's trigrams worth looking up: the [`MAX_TRIGRAMS`] least
    /// frequent in the sample (a trigram the sample never saw counts as
    /// rarest), earlier ones first among equals. Empty when the query has
    /// no trigram.
    pub fn rarest(&self, query: &str) -> Vec<String> {
        let mut candidates: Vec<(u32, usize, String)> = trigrams(query)
            .into_iter()
            .enumerate()
            .map(|(i, t)| (self.counts.get(&t).copied().unwrap_or(0), i, t))
            .collect();
        candidates.sort();
        candidates
            .into_iter()
            .take(MAX_TRIGRAMS)
            .map(|(_, _, t)| t)
            .collect()
    }
}

/// A store's current sample, taken again once [`SAMPLE_LIFETIME`] (or
/// [`SMALL_SAMPLE_LIFETIME`]) has passed.
#[derive(Debug, Default)]
pub struct SearchStats {
    current: Mutex<Option<(Instant, std::sync::Arc<TrigramSample>)>>,
}

impl SearchStats {
    /// The sample, unless there is none or it has expired.
    pub fn fresh(&self) -> Option<std::sync::Arc<TrigramSample>> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        current
            .as_ref()
            .filter(|(taken, sample)| {
                let lifetime = if sample.users() < SAMPLE_POINTS * SAMPLE_USERS_PER_POINT {
                    SMALL_SAMPLE_LIFETIME
                } else {
                    SAMPLE_LIFETIME
                };
                taken.elapsed() < lifetime
            })
            .map(|(_, sample)| sample.clone())
    }

    /// Keeps a newly taken sample.
    pub fn store(&self, sample: TrigramSample) -> std::sync::Arc<TrigramSample> {
        let sample = std::sync::Arc::new(sample);
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Instant::now(), sample.clone()));
        sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigrams_are_distinct_and_counted_in_characters() {
        assert_eq!(trigrams("ab"), Vec::<String>::new());
        assert_eq!(trigrams("aaaa"), vec!["aaa"]);
        assert_eq!(trigrams("zoë@x"), vec!["zoë", "oë@", "ë@x"]);
    }

    #[test]
    fn the_rarest_trigrams_are_looked_up() {
        let texts: Vec<String> = (0..1000).map(|i| format!("seed{i:07}")).collect();
        let sample = TrigramSample::new(texts.iter().map(String::as_str));
        assert_eq!(sample.users(), 1000);
        // `see`, `eed` and `ed0` occur in every sampled user; `d00`, `000`
        // in all of these; the digits at the end in few.
        let picked = sample.rarest("seed0001234");
        assert_eq!(picked.len(), MAX_TRIGRAMS);
        for common in ["see", "eed", "ed0", "d00", "000"] {
            assert!(!picked.contains(&common.to_owned()), "{picked:?}");
        }
        // One sampled user in 1 000 holds `123`, so 250 users are not
        // expected to hold 21 matches; every one holds `seed`'s trigrams.
        assert!(!sample.may_hold("seed0001234", 21, 250));
        assert!(sample.may_hold("seed", 21, 250));
        assert!(sample.may_hold("sé", 21, 250), "no trigram: cannot tell");
        assert!(TrigramSample::default().may_hold("seed0001234", 21, 250));
        // Never seen: rarest of all.
        assert_eq!(sample.rarest("xyz seed")[0], "xyz");
        assert!(sample.rarest("ab").is_empty());
    }
}
