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
//!
//! Each backend's index also holds every six-character run of each
//! searched value ([`GRAM`]): a query that long is looked up by a few of
//! its own, whose posting lists are short where a trigram's can cover one
//! user in a hundred (`seed0001234` shares `001`, `012`, `123` with every
//! phone number and address that holds those digits). The index holds
//! hashes, not text: on SQLite, FTS5 terms ([`index_terms`],
//! [`match_terms`]), a trigram or a six-run hashed to a fixed-length token
//! of letters and digits that FTS5's `ascii` tokenizer keeps whole,
//! whatever characters it was made of; on PostgreSQL, integers in an
//! array column under a GIN index ([`index_keys`], [`match_keys`]). Two
//! runs that hash alike only add candidates, which `LIKE` drops.

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

/// Characters in the longer runs SQLite's search index holds beside
/// trigrams (see the module documentation).
pub const GRAM: usize = 6;

/// Most six-runs of a query looked up.
const MAX_GRAMS: usize = 3;

/// Bits kept of a trigram's hash: far more values than there are
/// trigrams in use, so that two rarely share a term.
const TRIGRAM_BITS: u32 = 24;

/// Bits kept of a six-run's hash: about a million terms, which bounds the
/// index's dictionary however many distinct runs the users hold; at a
/// million users a term's posting list holds about 150 of them.
const GRAM_BITS: u32 = 20;

/// 64-bit FNV-1a: stable across releases and platforms, as terms written
/// into a database must be.
fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_more(0xcbf2_9ce4_8422_2325, bytes)
}

/// The FNV-1a hash of what `hash` hashed, then `bytes`.
fn fnv1a_more(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The FNV-1a hash of a run of characters, as UTF-8: [`fnv1a`] of the
/// run collected into a string, without the string.
fn run_hash(run: &[char]) -> u64 {
    let mut buf = [0; 4];
    run.iter().fold(fnv1a(&[]), |hash, c| {
        fnv1a_more(hash, c.encode_utf8(&mut buf).as_bytes())
    })
}

/// The index term of a run of characters on SQLite: `t` and six hex
/// digits for a trigram, `g` and five for a six-run.
fn term(run: &[char]) -> String {
    let mut text = String::with_capacity(7);
    push_term(&mut text, term_code(run));
    text
}

/// A run's term ([`term`]) as a number, which sorts as the term's text
/// does: six-runs' (`g`) below [`TRIGRAM_TERMS`], trigrams' from it.
fn term_code(run: &[char]) -> u32 {
    let hash = run_hash(run);
    let bits = if run.len() == GRAM {
        hash & ((1 << GRAM_BITS) - 1)
    } else {
        TRIGRAM_TERMS | (hash & ((1 << TRIGRAM_BITS) - 1))
    };
    u32::try_from(bits).unwrap_or(u32::MAX)
}

/// Where trigrams' term codes ([`term_code`]) start, past every six-run's.
const TRIGRAM_TERMS: u64 = 1 << TRIGRAM_BITS;

/// Appends the text of the term `code` stands for ([`term_code`]).
fn push_term(text: &mut String, code: u32) {
    use std::fmt::Write as _;
    let bits = u64::from(code);
    // Writing into a `String` cannot fail.
    let _ = if bits < TRIGRAM_TERMS {
        write!(text, "g{bits:05x}")
    } else {
        write!(text, "t{:06x}", bits & ((1 << TRIGRAM_BITS) - 1))
    };
}

/// The index key of a run of characters on PostgreSQL: the bits of its
/// SQLite term ([`term`]) as an integer, six-runs above trigrams. Fewer
/// bits make fewer distinct keys, each with a longer posting list, which
/// a GIN index stores far more compactly than many short ones.
fn key(run: &[char]) -> i32 {
    let hash = run_hash(run);
    low_bits(if run.len() == GRAM {
        GRAM_KEYS | (hash & ((1 << GRAM_BITS) - 1))
    } else {
        hash & ((1 << TRIGRAM_BITS) - 1)
    })
}

/// Where six-runs' keys start, past every trigram's.
const GRAM_KEYS: u64 = 1 << TRIGRAM_BITS;

/// Where the key of a whole search text starts ([`index_keys`]), past
/// every run's: no query is looked up by one.
const TEXT_KEYS: u64 = 2 << TRIGRAM_BITS;

/// The low 32 bits of a hash.
fn low_bits(hash: u64) -> i32 {
    let [a, b, c, d, ..] = hash.to_le_bytes();
    i32::from_le_bytes([a, b, c, d])
}

/// Calls `f` with each trigram and each six-run of each line of a
/// user's search text. A query holds no line break, so no run across two
/// lines is needed.
fn each_run(search_text: &str, mut f: impl FnMut(&[char])) {
    for line in search_text.split('\n') {
        let chars: Vec<char> = line.chars().collect();
        for size in [3, GRAM] {
            chars.windows(size).for_each(&mut f);
        }
    }
}

/// The terms SQLite's search index holds for a user's search text: those
/// of each distinct trigram and six-run ([`each_run`]), in the order of
/// their text, separated by spaces.
pub fn index_terms(search_text: &str) -> String {
    let mut codes = Vec::with_capacity(search_text.len() * 2);
    each_run(search_text, |run| codes.push(term_code(run)));
    codes.sort_unstable();
    codes.dedup();
    let mut terms = String::with_capacity(codes.len() * 8);
    for (i, &code) in codes.iter().enumerate() {
        if i > 0 {
            terms.push(' ');
        }
        push_term(&mut terms, code);
    }
    terms
}

/// The keys PostgreSQL's search index holds for a user's search text
/// (its `search_terms` column): those of each trigram and six-run
/// ([`each_run`]), and one of the whole text, sorted, without repeats.
/// The key of the whole text makes the keys of two different texts
/// differ, but for a chance of one in 16 million: the database tells a
/// change of text whose keys were left as they were, which an earlier
/// version of the store makes, by the keys being equal
/// (`migrations/postgres/0008`); such a user is only searched more
/// slowly until the store computes its keys again.
pub fn index_keys(search_text: &str) -> Vec<i32> {
    let text = TEXT_KEYS | (fnv1a(search_text.as_bytes()) & ((1 << TRIGRAM_BITS) - 1));
    let mut keys = vec![low_bits(text)];
    each_run(search_text, |run| keys.push(key(run)));
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The runs whose index terms narrow a search for `query`, given the
/// trigrams [`TrigramSample::rarest`] picked: a query shorter than
/// [`GRAM`] is looked up by those trigrams; a longer one by six-runs of
/// its own, each holding as many of the picked trigrams as a run can, the
/// rarest first, and by at least two runs when the query holds two. A run
/// is held by no more users than any of its trigrams, and a run of rare
/// trigrams by few: `seed0001234` is looked up by `001234` and its
/// neighbour `000123`, not by `seed00`, which one user in ten holds.
/// Empty when nothing was picked.
fn match_runs(query: &str, picked: &[String]) -> Vec<Vec<char>> {
    let chars: Vec<char> = query.chars().collect();
    if chars.len() < GRAM {
        return picked.iter().map(|t| t.chars().collect()).collect();
    }
    let last = chars.len() - GRAM;
    // Where each picked trigram first occurs in the query.
    let at: Vec<usize> = picked
        .iter()
        .filter_map(|t| {
            let t: Vec<char> = t.chars().collect();
            chars.windows(3).position(|w| w == t.as_slice())
        })
        .collect();
    let covers = |start: usize, p: usize| start <= p && p + 3 <= start + GRAM;
    let mut starts: Vec<usize> = Vec::new();
    for &p in &at {
        if starts.iter().any(|&s| covers(s, p)) || starts.len() == MAX_GRAMS {
            continue;
        }
        let first = p.saturating_sub(GRAM - 3).min(last);
        let best = (first..=p.min(last))
            .max_by_key(|&s| (at.iter().filter(|&&q| covers(s, q)).count(), usize::MAX - s));
        starts.extend(best);
    }
    // A run's term is shared, by hashing, with about 150 others at a
    // million users: a second run, next to the first, makes the users
    // holding both terms by chance few.
    if let [only] = starts[..]
        && last > 0
    {
        starts.push(if only < last { only + 1 } else { only - 1 });
    }
    starts
        .iter()
        .map(|&s| chars[s..s + GRAM].to_vec())
        .collect()
}

/// The terms of SQLite's index that narrow a search for `query` (see
/// [`match_runs`]), all of which a match holds.
pub fn match_terms(query: &str, picked: &[String]) -> Vec<String> {
    match_runs(query, picked).iter().map(|r| term(r)).collect()
}

/// The keys of PostgreSQL's index that narrow a search for `query` (see
/// [`match_runs`]), all of which a match holds.
pub fn match_keys(query: &str, picked: &[String]) -> Vec<i32> {
    match_runs(query, picked).iter().map(|r| key(r)).collect()
}

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

    /// Each distinct term of the text, in the order of their text: what
    /// the index held for every user written so far, and must keep
    /// holding.
    #[test]
    fn index_terms_are_each_runs_term_sorted_as_text() {
        for text in [
            "user_01jab\nada\nlovelace\nada@example.com\n+4915100000001",
            "abc",
            "zoë@x",
            "ab",
            "",
        ] {
            let mut expected = std::collections::BTreeSet::new();
            each_run(text, |run| {
                expected.insert(term(run));
            });
            let expected: Vec<String> = expected.into_iter().collect();
            assert_eq!(index_terms(text), expected.join(" "), "{text}");
        }
        // The terms' text, as written since the index began.
        let abc: Vec<char> = "abc".chars().collect();
        assert_eq!(term(&abc), format!("t{:06x}", fnv1a(b"abc") & 0xff_ffff));
        let six: Vec<char> = "abcdef".chars().collect();
        assert_eq!(term(&six), format!("g{:05x}", fnv1a(b"abcdef") & 0xf_ffff));
        assert!(index_terms("abcdef").starts_with('g'));
    }

    #[test]
    fn a_run_hashes_as_its_text() {
        for text in ["abc", "zoë@x", "+49151", "日本語テキスト"] {
            let run: Vec<char> = text.chars().collect();
            assert_eq!(run_hash(&run), fnv1a(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn trigrams_are_distinct_and_counted_in_characters() {
        assert_eq!(trigrams("ab"), Vec::<String>::new());
        assert_eq!(trigrams("aaaa"), vec!["aaa"]);
        assert_eq!(trigrams("zoë@x"), vec!["zoë", "oë@", "ë@x"]);
    }

    #[test]
    fn terms_are_fixed_length_tokens_of_each_line() {
        // Pinned: terms are written into databases, so their hash cannot
        // change between releases.
        assert_eq!(term(&['a', 'b', 'c']), "t41574b");
        assert_eq!(key(&['a', 'b', 'c']), 0x41_574b);
        // Trigrams 5, six-runs 2, the whole text 1.
        assert_eq!(index_keys("abcdefg").len(), 5 + 2 + 1);
        // Texts of the same runs differ by the key of the whole text.
        assert_ne!(index_keys("abcdefg\nabcdefg"), index_keys("abcdefg"));
        assert_eq!(index_keys("ab").len(), 1);
        assert!(index_keys("abcdefg").is_sorted());
        assert_eq!(index_terms("ab"), "");
        let terms = index_terms("zoë \"x\"\nabc");
        let terms: Vec<&str> = terms.split(' ').collect();
        // Trigrams: 5 of the first line, 1 of the second; six-runs: 2.
        assert_eq!(terms.len(), 8, "{terms:?}");
        for t in &terms {
            assert!(t.chars().all(|c| c.is_ascii_alphanumeric()), "{t}");
            assert_eq!(t.len(), if t.starts_with('g') { 6 } else { 7 });
        }
        // No run crosses the line break.
        assert!(!terms.contains(&term(&['"', '\n', 'a']).as_str()));
        assert_eq!(index_terms("abcdefg\nabcdefg"), index_terms("abcdefg"));
    }

    #[test]
    fn a_match_is_narrowed_by_terms_its_user_holds() {
        let text = "user_2x\nseed0001234\nseed0001234.0@example0.com\n+4915100002468";
        let held = index_terms(text);
        let held: Vec<&str> = held.split(' ').collect();
        let held_keys = index_keys(text);
        for query in ["seed0001234", "0001234.0@ex", "02468", "ser", "+491510"] {
            let sample = TrigramSample::new([text]);
            let terms = match_terms(query, &sample.rarest(query));
            assert!(!terms.is_empty(), "{query}");
            for t in &terms {
                assert!(held.contains(&t.as_str()), "{query}: {t}");
            }
            let keys = match_keys(query, &sample.rarest(query));
            assert_eq!(keys.len(), terms.len(), "{query}");
            for k in &keys {
                assert!(held_keys.binary_search(k).is_ok(), "{query}: {k}");
            }
        }
        let picked = ["123".to_owned(), "234".to_owned(), "012".to_owned()];
        let runs = |runs: &[&str]| -> Vec<String> {
            runs.iter()
                .map(|r| term(&r.chars().collect::<Vec<_>>()))
                .collect()
        };
        assert_eq!(
            match_terms("seed0001234", &picked),
            runs(&["001234", "000123"]),
            "one run holds all three; its neighbour narrows the hash"
        );
        assert_eq!(match_terms("0001234", &picked), runs(&["001234", "000123"]));
        assert_eq!(match_terms("001234", &picked), runs(&["001234"]));
        let apart = ["see".to_owned(), "234".to_owned()];
        assert_eq!(
            match_terms("seed0001234", &apart),
            runs(&["seed00", "001234"])
        );
        assert!(match_terms("seed0001234", &[]).is_empty());
        assert_eq!(
            match_terms("seed0", &["ed0".into()]),
            vec![term(&['e', 'd', '0'])]
        );
        assert!(match_terms("ab", &[]).is_empty());
        let other = match_terms("seed0001235", &["235".into()]);
        assert!(!held.contains(&other[0].as_str()));
        let other = match_keys("seed0001235", &["235".into()]);
        assert!(held_keys.binary_search(&other[0]).is_err());
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
