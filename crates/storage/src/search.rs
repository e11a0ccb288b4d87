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
//! Each backend's index also holds six-character runs of each searched
//! value ([`GRAM`]): a query of [`RUN_QUERY`] characters or more is looked
//! up by a few of its own, whose posting lists are short where a
//! trigram's can cover one user in a hundred (`seed0001234` shares `001`,
//! `012`, `123` with every phone number and address that holds those
//! digits). Not every run: of each [`WINDOW`] runs in a row, the index
//! holds the one of least rank (a hash), as winnowing does (Schleimer,
//! Wilkerson and Aiken, 2003), about half of them. A query that long
//! holds a whole window of each user it matches, and that window's least
//! run is the query's too; so a query is looked up by runs it would hold
//! itself ([`held_runs`]). Users whose terms were written when the index
//! held every run hold more than these, and are found as before. Every
//! run was a key of its own, and keeping them up to date cost PostgreSQL
//! a third of the users it could create per second (9 950/s without the
//! index, 6 450 with every run, 7 270 with half).
//!
//! The index holds hashes, not text: on SQLite, FTS5 terms ([`index_terms`],
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

/// Six-runs in a row of which the index holds the one of least rank
/// ([`held_runs`]): about two in every `WINDOW + 1`.
pub const WINDOW: usize = 3;

/// The shortest query looked up by six-runs: one that holds a whole
/// [`WINDOW`] of them. Shorter ones are looked up by trigrams.
pub const RUN_QUERY: usize = GRAM + WINDOW - 1;

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

/// Calls `f` with each trigram and each held six-run ([`held_runs`]) of
/// each line of a user's search text. A query holds no line break, so no
/// run across two lines is needed.
fn each_run(search_text: &str, mut f: impl FnMut(&[char])) {
    for line in search_text.split('\n') {
        let chars: Vec<char> = line.chars().collect();
        chars.windows(3).for_each(&mut f);
        for start in held_runs(&chars) {
            f(&chars[start..start + GRAM]);
        }
    }
}

/// Where the six-runs of `chars` that the index holds start, in order:
/// in each [`WINDOW`] runs in a row, the one of least [`rank`], the first
/// of them among equals. Which run that is depends only on the window's
/// characters, so a text holding the window holds the same run. None when
/// `chars` is shorter than [`RUN_QUERY`].
fn held_runs(chars: &[char]) -> Vec<usize> {
    let ranks: Vec<u64> = chars.windows(GRAM).map(rank).collect();
    let mut starts: Vec<usize> = Vec::new();
    for (first, window) in ranks.windows(WINDOW).enumerate() {
        let least = window
            .iter()
            .enumerate()
            .min_by_key(|&(i, r)| (*r, i))
            .map_or(first, |(i, _)| first + i);
        // Windows slide by one: the least run moves only forwards.
        if starts.last() != Some(&least) {
            starts.push(least);
        }
    }
    starts
}

/// The order in which runs are held: their hash, its bits mixed
/// (SplitMix64's finalizer) so that no run of FNV-1a's weaker bits
/// decides it.
fn rank(run: &[char]) -> u64 {
    let mut z = run_hash(run);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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
/// [`RUN_QUERY`] is looked up by those trigrams; a longer one by six-runs
/// the index holds of it ([`held_runs`]), each holding as many of the
/// picked trigrams as one of them can, the rarest first, and by a second
/// when another holds a picked trigram (when none does, by the run
/// nearest the rarest). A run is held by no more users than any of its
/// trigrams, and a run of rare trigrams by few; a run of none of them can
/// be held by every other user, and reading its posting list would cost
/// more than it narrows. Looked up by a single run, a query is looked up
/// by the rarest picked trigram outside it too: a run's key is shared, by
/// hashing, with about 150 others at a million users, and the two
/// together make the users holding both by chance few.
/// Empty when nothing was picked.
fn match_runs(query: &str, picked: &[String]) -> Vec<Vec<char>> {
    let chars: Vec<char> = query.chars().collect();
    if chars.len() < RUN_QUERY || picked.is_empty() {
        return picked.iter().map(|t| t.chars().collect()).collect();
    }
    let held = held_runs(&chars);
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
        let best = held
            .iter()
            .copied()
            .filter(|&s| covers(s, p))
            .max_by_key(|&s| (at.iter().filter(|&&q| covers(s, q)).count(), usize::MAX - s));
        starts.extend(best);
    }
    // No held run holds a picked trigram: the one nearest the rarest.
    if starts.is_empty()
        && let Some(&rarest) = at.first()
    {
        let apart = |s: usize| s.saturating_sub(rarest) + rarest.saturating_sub(s + GRAM - 3);
        starts.extend(held.iter().copied().min_by_key(|&s| (apart(s), s)));
    }
    // A second run narrows what hashing shares, but only one holding a
    // picked trigram is worth it: the others are of the query's common
    // part (`seed00`), held by every other user.
    if starts.len() == 1 {
        let second = held
            .iter()
            .copied()
            .filter(|s| !starts.contains(s))
            .filter_map(|s| {
                let rarest = at.iter().position(|&p| covers(s, p))?;
                Some((rarest, usize::MAX - s, s))
            })
            .min();
        starts.extend(second.map(|(_, _, s)| s));
    }
    let mut runs: Vec<Vec<char>> = starts
        .iter()
        .map(|&s| chars[s..s + GRAM].to_vec())
        .collect();
    if let [only] = starts[..]
        && let Some(&p) = at.iter().find(|&&p| !covers(only, p))
    {
        runs.push(chars[p..p + 3].to_vec());
    }
    runs
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
        assert!(index_terms("abcdefgh").starts_with('g'));
    }

    /// Any part of a user's text long enough to be looked up by runs is
    /// looked up by keys and terms the user holds, whatever trigrams were
    /// picked: the guarantee the index's sampling of runs rests on.
    #[test]
    fn every_long_part_of_a_text_is_found_by_its_held_runs() {
        // A small alphabet, so that runs repeat and ranks tie.
        let alphabet: Vec<char> = "ab0@.é".chars().collect();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % below as u64).unwrap_or(0)
        };
        let mut checked = 0;
        for _ in 0..200 {
            let len = 1 + next(40);
            let text: String = (0..len).map(|_| alphabet[next(alphabet.len())]).collect();
            let keys = index_keys(&text);
            let terms = index_terms(&text);
            let terms: Vec<&str> = terms.split(' ').collect();
            let chars: Vec<char> = text.chars().collect();
            for start in 0..chars.len() {
                for end in start + RUN_QUERY..=chars.len() {
                    let query: String = chars[start..end].iter().collect();
                    let all = trigrams(&query);
                    for picked in [&all[..], &all[..1], &all[all.len() - 1..]] {
                        for k in match_keys(&query, picked) {
                            assert!(keys.binary_search(&k).is_ok(), "{query:?} in {text:?}");
                        }
                        let looked_up = match_terms(&query, picked);
                        assert!(looked_up.iter().any(|t| t.starts_with('g')), "{query:?}");
                        for t in looked_up {
                            assert!(terms.contains(&t.as_str()), "{query:?} in {text:?}");
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    #[test]
    fn about_half_the_runs_are_held() {
        let text: String = (0..4000_u32)
            .map(|i| char::from(b'a' + u8::try_from(fnv1a(&i.to_le_bytes()) % 26).unwrap_or(0)))
            .collect();
        let chars: Vec<char> = text.chars().collect();
        let held = held_runs(&chars).len();
        let runs = chars.len() - GRAM + 1;
        // Winnowing holds about 2 / (WINDOW + 1) of the runs.
        assert!(
            held * 10 > runs * 4 && held * 10 < runs * 6,
            "{held} of {runs}"
        );
        assert!(held_runs(&chars[..RUN_QUERY - 1]).is_empty());
        assert_eq!(held_runs(&chars[..RUN_QUERY]).len(), 1);
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
        // Trigrams 6, one of the three six-runs, the whole text 1; a line
        // shorter than a window of runs holds none.
        assert_eq!(index_keys("abcdefgh").len(), 6 + 1 + 1);
        assert_eq!(index_keys("abcdefg").len(), 5 + 1);
        // Texts of the same runs differ by the key of the whole text.
        assert_ne!(index_keys("abcdefg\nabcdefg"), index_keys("abcdefg"));
        assert_eq!(index_keys("ab").len(), 1);
        assert!(index_keys("abcdefg").is_sorted());
        assert_eq!(index_terms("ab"), "");
        let terms = index_terms("zoë \"x\"\nabc");
        let terms: Vec<&str> = terms.split(' ').collect();
        // Trigrams: 5 of the first line, 1 of the second; the first line
        // is too short for a window of six-runs.
        assert_eq!(terms.len(), 6, "{terms:?}");
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
        // Long queries are looked up by runs the index holds of them, and
        // the rarest picked trigrams steer which.
        let picked = ["123".to_owned(), "234".to_owned(), "012".to_owned()];
        let query: Vec<char> = "seed0001234".chars().collect();
        let query_held: Vec<Vec<char>> = held_runs(&query)
            .iter()
            .map(|&s| query[s..s + GRAM].to_vec())
            .collect();
        let runs = match_runs("seed0001234", &picked);
        assert!((1..=MAX_GRAMS).contains(&runs.len()), "{runs:?}");
        for run in &runs {
            if run.len() == GRAM {
                assert!(query_held.contains(run), "{run:?} of {query_held:?}");
            }
            // Every key looked up holds a picked trigram: none is of the
            // common prefix.
            assert!(
                picked
                    .iter()
                    .any(|t| run.windows(3).any(|w| w.iter().copied().eq(t.chars()))),
                "{run:?}"
            );
        }
        let covering: Vec<&Vec<char>> = query_held
            .iter()
            .filter(|r| r.windows(3).any(|t| t == ['1', '2', '3']))
            .collect();
        if let Some(first) = covering.first() {
            assert!(
                runs.contains(first),
                "a run holding the rarest is looked up"
            );
        }
        // Shorter than a window of runs: by the picked trigrams.
        assert_eq!(
            match_terms("0001234", &picked),
            picked
                .iter()
                .map(|t| term(&t.chars().collect::<Vec<_>>()))
                .collect::<Vec<_>>()
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
