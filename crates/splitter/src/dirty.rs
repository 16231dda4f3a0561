//! Which regions of the image may hold changes the vault does not have.
//!
//! Two sets, both in regions of [`REGION_BYTES`]:
//!
//! - the **intent log**, on disk beside the image: a region's bit is set and
//!   made durable *before* the image is first changed there, and cleared
//!   (lazily) once every change to it is sealed in the vault. After a crash
//!   the set bits are exactly the regions to re-read: nothing else can
//!   differ from the journal.
//! - the **refresh set**, in memory: regions whose changes were not queued
//!   (the queue was full, or the splitter just started) and must be read
//!   from the image and recorded before the journal is exact again.
//!
//! The intent file's layout is `standby_format::intent` (docs/format.md).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use standby_format::{decode_intent_log, encode_intent_header, intent_log_bytes, INTENT_HEADER_BYTES};

pub const REGION_BYTES: u64 = 1 << 20;

pub struct Regions {
    file: File,
    image_bytes: u64,
    /// The intent bits as they are on disk (set bits durable).
    intent: Vec<u64>,
    /// Changes queued or unsealed per region.
    pending: Vec<u32>,
    /// Regions to re-read from the image.
    refresh: Vec<u64>,
    /// When intent bits were last cleared (see [`Regions::write_back`]).
    last_sweep: std::time::Instant,
    /// Regions written since the last sweep: their bits stay set.
    touched: Vec<u64>,
    /// Makes set bits durable, apart from the lock that guards `Regions`.
    durable: Arc<Durable>,
}

/// The fdatasync of the intent log, shared by writers (group commit):
/// every time new bits are written the generation goes up, and one
/// fdatasync covers every generation written before it began, so writers
/// that set bits at the same moment wait for one sync, not one each.
///
/// A failed write or sync leaves the file's bits unknown (after a failed
/// fdatasync, Linux may even have dropped the pages it could not write):
/// the next intent then writes every bit again and is waited for, even
/// when its own bits were set before, and so is every intent until that
/// rewrite is durable. Without it, a write to a region whose bit is set
/// only in memory would change the image with no durable intent, and a
/// splitter started after a crash would not re-read it.
struct Durable {
    file: File,
    /// Generation of the last bits written to the file.
    written: AtomicU64,
    /// Generation known durable; held while a sync runs.
    synced: Mutex<u64>,
    /// The same, readable without waiting for a sync that runs.
    synced_seen: AtomicU64,
    /// A write or sync of the file failed since the bits were last all
    /// written again.
    failed: AtomicBool,
    /// The generation that wrote every bit again after a failure: no intent
    /// is durable before it is.
    rewritten: AtomicU64,
}

impl Durable {
    fn wait(&self, generation: u64) -> io::Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= generation {
            return Ok(());
        }
        let covered = self.written.load(Ordering::SeqCst);
        let result = crate::faults::injected(crate::faults::Fault::IntentSync).and_then(|()| self.file.sync_data());
        if let Err(e) = result {
            self.failed.store(true, Ordering::SeqCst);
            return Err(e);
        }
        *synced = covered;
        self.synced_seen.store(covered, Ordering::SeqCst);
        Ok(())
    }

    /// Whether bits set in memory may not be durable (a failure, or the
    /// rewrite after one not yet synced).
    fn unsure(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
            || self.rewritten.load(Ordering::SeqCst) > self.synced_seen.load(Ordering::SeqCst)
    }
}

/// New intent bits written but maybe not yet durable: [`Intent::wait`]
/// before the image changes in the regions they cover.
#[must_use = "the image must not change before the intent is durable"]
pub struct Intent {
    durable: Arc<Durable>,
    generation: u64,
}

impl Intent {
    /// Returns once the bits are durable (an fdatasync, perhaps shared
    /// with other writers).
    pub fn wait(self) -> io::Result<()> {
        self.durable.wait(self.generation)
    }
}

/// Intent bits of regions whose changes are all sealed are cleared at most
/// this often, and only for regions not written since the previous time
/// (quiet for a whole interval). Clearing at once would make the next write
/// there set the bit again, with an fdatasync on the guest's write path: a
/// region written every few seconds would pay one at every seal. Left set,
/// a bit only costs re-reading its MiB after a crash.
pub const CLEAR_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

fn regions_of(offset: u64, length: u64) -> std::ops::Range<usize> {
    if length == 0 {
        return 0..0;
    }
    (offset / REGION_BYTES) as usize..((offset + length - 1) / REGION_BYTES + 1) as usize
}

/// The byte ranges an intent log at `path` marks dirty for an image of
/// `image_bytes`, or `None` when there is no usable log (then nothing is
/// known about what changed). Reads only; the log stays as it is.
pub fn read_intent_log(path: &Path, image_bytes: u64) -> io::Result<Option<Vec<(u64, u64)>>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(decode_intent(&bytes, image_bytes).map(|dirty| {
        dirty
            .into_iter()
            .map(|region| {
                let start = region as u64 * REGION_BYTES;
                (start, REGION_BYTES.min(image_bytes - start))
            })
            .collect()
    }))
}

/// Writes an intent log at `path` (fsynced, atomically replacing one there) marking the regions `ranges`
/// touch as dirty: a splitter started on the image then re-reads exactly
/// those. For reprotect, which knows from tracking which blocks differ
/// between the image and the vault's base.
pub fn write_intent_log(path: &Path, image_bytes: u64, ranges: &[(u64, u64)]) -> io::Result<()> {
    let count = image_bytes.div_ceil(REGION_BYTES) as usize;
    let mut intent = vec![0u64; count.div_ceil(64)];
    for &(offset, length) in ranges {
        for region in regions_of(offset, length.min(image_bytes.saturating_sub(offset))) {
            intent[region / 64] |= 1 << (region % 64);
        }
    }
    let mut body = header(image_bytes).to_vec();
    for word in &intent {
        body.extend_from_slice(&word.to_le_bytes());
    }
    // Replaced whole (a new file renamed over it): a crash midway leaves
    // the old log or the new one, never a truncated one.
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let file = File::create(&temporary)?;
    file.write_all_at(&body, 0)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(directory) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(directory)?.sync_all()?;
    }
    Ok(())
}

fn header(image_bytes: u64) -> [u8; INTENT_HEADER_BYTES as usize] {
    encode_intent_header(REGION_BYTES, image_bytes)
}

/// The dirty regions of an intent log's bytes, if it is a valid log for
/// an image of `image_bytes`.
fn decode_intent(bytes: &[u8], image_bytes: u64) -> Option<Vec<usize>> {
    decode_intent_log(bytes, REGION_BYTES, image_bytes)
}

impl Regions {
    /// Opens (or creates) the intent log at `path` for an image of
    /// `image_bytes`. Returns the regions it says may be dirty, or `None`
    /// when there was no usable log (missing, damaged, another size): then
    /// nothing is known and everything must be re-read.
    pub fn open(path: &Path, image_bytes: u64) -> io::Result<(Regions, Option<Vec<usize>>)> {
        let count = image_bytes.div_ceil(REGION_BYTES) as usize;
        let words = count.div_ceil(64);
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let mut previous = None;
        let expected_len = intent_log_bytes(REGION_BYTES, image_bytes);
        if file.metadata()?.len() == expected_len {
            let mut bytes = vec![0u8; expected_len as usize];
            file.read_exact_at(&mut bytes, 0)?;
            previous = decode_intent(&bytes, image_bytes);
        }
        let durable = Arc::new(Durable {
            file: file.try_clone()?,
            written: AtomicU64::new(0),
            synced: Mutex::new(0),
            synced_seen: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            rewritten: AtomicU64::new(0),
        });
        let mut regions = Regions {
            file,
            durable,
            image_bytes,
            intent: vec![0; words],
            pending: vec![0; count],
            refresh: vec![0; words],
            last_sweep: std::time::Instant::now(),
            touched: vec![0; words],
        };
        // Start from a log that says what the caller is about to re-read:
        // every previously dirty region stays dirty until refreshed and sealed.
        let header = header(image_bytes);
        let to_keep: Vec<usize> = match &previous {
            Some(dirty) => dirty.clone(),
            None => (0..count).collect(),
        };
        for &region in &to_keep {
            regions.intent[region / 64] |= 1 << (region % 64);
        }
        let mut body = Vec::with_capacity(expected_len as usize);
        body.extend_from_slice(&header);
        for word in &regions.intent {
            body.extend_from_slice(&word.to_le_bytes());
        }
        regions.file.set_len(expected_len)?;
        regions.file.write_all_at(&body, 0)?;
        regions.file.sync_data()?;
        Ok((regions, previous))
    }

    pub fn region_count(&self) -> usize {
        self.pending.len()
    }

    /// The byte range of a region (the last one may be short).
    pub fn range(&self, region: usize) -> (u64, u64) {
        let start = region as u64 * REGION_BYTES;
        (start, (self.image_bytes - start).min(REGION_BYTES))
    }

    /// Makes the intent durable for every region the range touches, before
    /// the image changes there. Costs a write and an fdatasync only when a
    /// region was clean.
    pub fn intend(&mut self, offset: u64, length: u64) -> io::Result<()> {
        match self.intend_later(offset, length)? {
            Some(intent) => intent.wait(),
            None => Ok(()),
        }
    }

    /// Sets the intent for every region the range touches and writes the
    /// bits that were clear; returns what to wait for before the image
    /// changes there when there were any (`None`: already durable). The
    /// wait, an fdatasync, needs no `&mut self`: a caller can release its
    /// lock meanwhile (holding the range with [`Regions::hold`] so that no
    /// sweep clears the new bits).
    pub fn intend_later(&mut self, offset: u64, length: u64) -> io::Result<Option<Intent>> {
        let mut changed_words = Vec::new();
        for region in regions_of(offset, length) {
            let (word, bit) = (region / 64, 1u64 << (region % 64));
            self.touched[word] |= bit;
            if self.intent[word] & bit == 0 {
                self.intent[word] |= bit;
                changed_words.push(word);
            }
        }
        if self.durable.failed.swap(false, Ordering::SeqCst) {
            // See `Durable`: every bit is written again.
            changed_words = (0..self.intent.len()).collect();
            let written = self.write_words(&changed_words);
            let generation = self.durable.written.fetch_add(1, Ordering::SeqCst) + 1;
            self.durable.rewritten.store(generation, Ordering::SeqCst);
            written?;
            return Ok(Some(Intent { durable: self.durable.clone(), generation }));
        }
        if changed_words.is_empty() {
            if self.durable.unsure() {
                let generation = self.durable.rewritten.load(Ordering::SeqCst);
                return Ok(Some(Intent { durable: self.durable.clone(), generation }));
            }
            return Ok(None);
        }
        changed_words.dedup();
        self.write_words(&changed_words)?;
        let generation = self.durable.written.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Some(Intent { durable: self.durable.clone(), generation }))
    }

    /// Writes the intent words `words`; a failure is remembered (see `Durable`).
    fn write_words(&self, words: &[usize]) -> io::Result<()> {
        let written = words.iter().try_for_each(|&word| self.write_word(word));
        if written.is_err() {
            self.durable.failed.store(true, Ordering::SeqCst);
        }
        written
    }

    /// Keeps the range's intent bits set until [`Regions::release`]: a
    /// change on its way to the queue (waiting for its intent to be
    /// durable) counts as pending.
    pub fn hold(&mut self, offset: u64, length: u64) {
        self.queued(offset, length);
    }

    pub fn release(&mut self, offset: u64, length: u64) {
        self.sealed(offset, length);
    }

    fn write_word(&self, word: usize) -> io::Result<()> {
        self.file.write_all_at(&self.intent[word].to_le_bytes(), INTENT_HEADER_BYTES + 8 * word as u64)
    }

    /// A change to the range was queued.
    pub fn queued(&mut self, offset: u64, length: u64) {
        for region in regions_of(offset, length) {
            self.pending[region] += 1;
        }
    }

    /// A queued change to the range is sealed in the vault.
    pub fn sealed(&mut self, offset: u64, length: u64) {
        for region in regions_of(offset, length) {
            self.pending[region] = self.pending[region].saturating_sub(1);
        }
    }

    /// Clears the intent bits of regions whose every change is sealed and
    /// that need no refresh and were not written since the last sweep, and
    /// writes the words that changed (no fsync: a bit left set only costs a
    /// re-read after a crash). Does nothing until [`CLEAR_INTERVAL`] has
    /// passed since the last time, unless `now` (a clean stop: every region
    /// whose changes are sealed is cleared).
    pub fn write_back(&mut self, now: bool) -> io::Result<()> {
        if !now && self.last_sweep.elapsed() < CLEAR_INTERVAL {
            return Ok(());
        }
        self.last_sweep = std::time::Instant::now();
        for word in 0..self.intent.len() {
            let quiet = if now { u64::MAX } else { !std::mem::take(&mut self.touched[word]) };
            let mut bits = self.intent[word] & !self.refresh[word] & quiet;
            let before = self.intent[word];
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if self.pending[word * 64 + bit] == 0 {
                    self.intent[word] &= !(1u64 << bit);
                }
            }
            if self.intent[word] != before {
                self.write_word(word)?;
            }
        }
        Ok(())
    }

    /// Whether a region's intent bit is set.
    #[cfg(test)]
    fn intended(&self, region: usize) -> bool {
        self.intent[region / 64] & (1 << (region % 64)) != 0
    }

    /// The range must be re-read from the image (its change was not queued).
    pub fn need_refresh(&mut self, offset: u64, length: u64) {
        for region in regions_of(offset, length) {
            self.refresh[region / 64] |= 1 << (region % 64);
        }
    }

    pub fn need_refresh_region(&mut self, region: usize) {
        self.refresh[region / 64] |= 1 << (region % 64);
    }

    /// Takes the next region to re-read, if any.
    pub fn take_refresh(&mut self) -> Option<usize> {
        let word = self.refresh.iter().position(|&w| w != 0)?;
        let bit = self.refresh[word].trailing_zeros() as usize;
        self.refresh[word] &= !(1 << bit);
        Some(word * 64 + bit)
    }

    /// Bytes of the image waiting to be re-read.
    pub fn refresh_bytes(&self) -> u64 {
        self.refresh.iter().map(|w| u64::from(w.count_ones())).sum::<u64>() * REGION_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every region refreshed and its change sealed.
    fn level_everything(regions: &mut Regions) {
        for region in 0..regions.region_count() {
            let (offset, length) = regions.range(region);
            regions.queued(offset, length);
            regions.sealed(offset, length);
        }
    }

    /// A write or sync of the log that failed leaves its bits unknown: the
    /// next intent, even on a region whose bit was set, writes every bit
    /// again and must be waited for, and so must every intent until that
    /// is durable. (Before, a write to a region set only in memory went
    /// ahead at once: after a crash, nothing would have re-read it.)
    #[test]
    fn after_a_failed_write_or_sync_of_the_log_every_bit_is_written_again_and_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intent");
        let size = 8 * REGION_BYTES;
        let (mut regions, _) = Regions::open(&path, size).unwrap();
        level_everything(&mut regions);
        regions.write_back(true).unwrap();
        regions.intend(0, 4096).unwrap();
        assert!(regions.intend_later(0, 4096).unwrap().is_none(), "a durable bit costs nothing");

        // The sync failed, and the bits it was to make durable are lost.
        regions.durable.failed.store(true, Ordering::SeqCst);
        let words = vec![0u8; (intent_log_bytes(REGION_BYTES, size) - INTENT_HEADER_BYTES) as usize];
        regions.file.write_all_at(&words, INTENT_HEADER_BYTES).unwrap();
        let rewrite = regions.intend_later(0, 4096).unwrap().expect("a write after a failure waits");
        let meanwhile = regions.intend_later(REGION_BYTES * 3, 1).unwrap();
        let meanwhile = meanwhile.expect("every write waits until the rewrite is durable");
        let again = regions.intend_later(0, 4096).unwrap().expect("and so does one to the same region");
        rewrite.wait().unwrap();
        meanwhile.wait().unwrap();
        again.wait().unwrap();
        assert_eq!(
            read_intent_log(&path, size).unwrap(),
            Some(vec![(0, REGION_BYTES), (3 * REGION_BYTES, REGION_BYTES)])
        );
        assert!(regions.intend_later(0, 4096).unwrap().is_none(), "durable again, a set bit costs nothing");
    }

    #[test]
    fn intent_survives_reopening_and_clears_once_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intent");
        let size = 10 * REGION_BYTES + 5;
        let (mut regions, previous) = Regions::open(&path, size).unwrap();
        assert_eq!(previous, None, "a new log knows nothing");
        // Everything is dirty until refreshed and sealed.
        level_everything(&mut regions);
        regions.write_back(true).unwrap();
        regions.intend(REGION_BYTES - 1, 2).unwrap();
        regions.queued(REGION_BYTES - 1, 2);
        regions.intend(10 * REGION_BYTES, 5).unwrap();
        drop(regions);
        let (mut regions, previous) = Regions::open(&path, size).unwrap();
        assert_eq!(previous, Some(vec![0, 1, 10]));
        for region in [0, 1, 10] {
            let (offset, length) = regions.range(region);
            regions.queued(offset, length);
            regions.sealed(offset, length);
        }
        regions.write_back(true).unwrap();
        drop(regions);
        assert_eq!(Regions::open(&path, size).unwrap().1, Some(vec![]));
        // Another image size: nothing is known.
        assert_eq!(Regions::open(&path, size + REGION_BYTES).unwrap().1, None);
    }

    #[test]
    fn a_region_stays_dirty_while_any_change_is_unsealed_or_a_refresh_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let (mut regions, _) = Regions::open(&dir.path().join("intent"), 4 * REGION_BYTES).unwrap();
        level_everything(&mut regions);
        regions.intend(0, 10).unwrap();
        regions.queued(0, 10);
        regions.queued(5, 10);
        regions.sealed(0, 10);
        regions.write_back(true).unwrap();
        assert_eq!(Regions::open(&dir.path().join("intent"), 4 * REGION_BYTES).unwrap().1, Some(vec![0]));
        let (mut regions, _) = Regions::open(&dir.path().join("intent"), 4 * REGION_BYTES).unwrap();
        regions.need_refresh(2 * REGION_BYTES, 1);
        assert_eq!(regions.refresh_bytes(), REGION_BYTES);
        assert_eq!(regions.take_refresh(), Some(2));
        assert_eq!(regions.take_refresh(), None);
    }

    #[test]
    fn an_intent_waited_for_later_is_durable_and_held_against_sweeps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intent");
        let (mut regions, _) = Regions::open(&path, 4 * REGION_BYTES).unwrap();
        level_everything(&mut regions);
        regions.write_back(true).unwrap();
        let first = regions.intend_later(0, 10).unwrap().expect("region 0 was clean");
        let second = regions.intend_later(2 * REGION_BYTES, 10).unwrap().expect("region 2 was clean");
        assert!(regions.intend_later(5, 10).unwrap().is_none(), "region 0's bit is already written");
        regions.hold(0, 10);
        // Waited for from other threads, in any order: one sync may cover both.
        std::thread::scope(|scope| {
            scope.spawn(|| second.wait().unwrap());
            scope.spawn(|| first.wait().unwrap());
        });
        // A sweep (even at a clean stop) leaves a held region's bit alone.
        regions.write_back(true).unwrap();
        assert!(regions.intended(0) && !regions.intended(2));
        assert_eq!(Regions::open(&path, 4 * REGION_BYTES).unwrap().1, Some(vec![0]));
        regions.release(0, 10);
        regions.write_back(true).unwrap();
        assert!(!regions.intended(0));
    }

    #[test]
    fn sealed_regions_keep_their_bit_until_the_next_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let (mut regions, _) = Regions::open(&dir.path().join("intent"), 4 * REGION_BYTES).unwrap();
        level_everything(&mut regions);
        regions.write_back(true).unwrap();
        regions.intend(0, 10).unwrap();
        regions.queued(0, 10);
        regions.sealed(0, 10);
        regions.write_back(false).unwrap();
        assert!(regions.intended(0), "cleared before the interval passed");
        regions.last_sweep -= CLEAR_INTERVAL;
        regions.write_back(false).unwrap();
        assert!(regions.intended(0), "cleared though written during the interval");
        regions.last_sweep -= CLEAR_INTERVAL;
        regions.write_back(false).unwrap();
        assert!(!regions.intended(0), "not cleared after a quiet interval");
    }
}

#[cfg(test)]
mod log_files {
    use super::*;

    #[test]
    fn a_written_intent_log_is_what_a_splitter_and_a_reader_see() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image.standby-dirty");
        let image_bytes = 10 * REGION_BYTES + 4096;
        assert_eq!(read_intent_log(&path, image_bytes).unwrap(), None, "no log: nothing is known");
        // A write across a region boundary marks both; one in the short last region marks it.
        write_intent_log(&path, image_bytes, &[(REGION_BYTES - 10, 20), (10 * REGION_BYTES + 5, 1)]).unwrap();
        let ranges = read_intent_log(&path, image_bytes).unwrap().unwrap();
        assert_eq!(ranges, [(0, REGION_BYTES), (REGION_BYTES, REGION_BYTES), (10 * REGION_BYTES, 4096)]);
        let (_, previous) = Regions::open(&path, image_bytes).unwrap();
        assert_eq!(previous, Some(vec![0, 1, 10]));
        // A log for another size is not used.
        assert_eq!(read_intent_log(&path, image_bytes * 2).unwrap(), None);
    }
}
