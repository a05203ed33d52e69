//! A zone's marts and state rebuilt whole from one scan of its human events.
//!
//! The scan (on both cores) sums `mart_brands` and `mart_categories` as it goes, and spills
//! compact records to a partition of the users (for their state: each cart and purchase,
//! and the cells of a window of events summed) and one of the sessions (for theirs: the
//! parts of a window of events summed). The partitions are ranges of keys cut from a sample, so that
//! each holds about [`PART_EVENTS`] events. Each partition is then folded alone (a user
//! partition and a session partition at a time, side by side; each table's partitions in
//! order, a fold and then its write):
//! its records sorted, its users' (or sessions') rows written as one file of the
//! state's run 1, and their contributions to `mart_daily`, `mart_category_visitors` and
//! `mart_items` summed: the contributions an incremental refresh later takes away and adds
//! back ([`super::contrib`]). The ranges are disjoint and written in order, so a keyed read
//! finds a key in one file; memory stays near two partitions' records.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, BooleanBuilder, Date32Array, Int64Array, Int64Builder, RecordBatch,
    StringArray, StringBuilder,
};
use deltalake::datafusion::error::DataFusionError;
use foldhash::HashMap;
use futures::StreamExt;
use shoplake_lake::{Lake, TableName};

use super::contrib::{By, Daily, ItemRow, Sums, VisitorKey};
use super::{incremental, replace, state};
use crate::columns::Columns;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::folds::{CartRow, text};
use crate::udf::{LocalDays, MICROS_PER_HOUR, category_at, parse_zone};
use chrono_tz::Tz;

/// Events per partition: a partition's records (50 bytes each) and its fold stay in a few
/// hundred MiB, two at a time (a users' and a sessions').
const PART_EVENTS: usize = 2_000_000;

/// One event in this many is sampled to cut the partitions.
const SAMPLE_EVERY: usize = 512;

/// Event kinds as the scan reads them, and [`CELL`] for a spilled cell.
const OTHER: u8 = 0;
const VIEW: u8 = 1;
const CART: u8 = 2;
const PURCHASE: u8 = 3;
const CELL: u8 = 4;

/// Cells a scan stream sums at most before it spills them all: about 25 MiB.
const WINDOW: usize = 1 << 19;

/// Sessions a scan stream keeps open at most before it spills them all.
const SESSION_WINDOW: usize = 1 << 18;

/// The scan runs (mostly) in time order, so what is done can be swept out of the windows
/// as it goes: a cell of an hour before the stream's latest gets no more (a cell is a local
/// hour), a session idle for half an hour rarely does (more of it later is a piece the fold
/// merges), and a day's brand and category sums are complete a day later.
/// A window is swept when it reaches these sizes (or twice what the last sweep left), which
/// keeps each in a few MiB, in the cache, rather than tens of MiB a lookup misses.
const SWEEP_CELLS: usize = 1 << 15;
const SWEEP_SESSIONS: usize = 1 << 14;
const SWEEP_SUMS: usize = 1 << 14;
/// Local days whose brand sums a stream keeps open at once: today and yesterday's (a UTC
/// day's events fall on two local days), and a late event's day without closing those.
const OPEN_DAYS: usize = 3;
const SESSION_IDLE_US: i64 = 1_800_000_000;

/// The kinds of `mart_user_state` rows (as [`super::state`] reads them).
const DAY_ROW: i64 = 0;
const CELL_ROW: i64 = 1;
const CART_ROW: i64 = 2;
const PURCHASE_ROW: i64 = 3;

/// What a rebuild wrote, for the zone's summary and its stamped `mart_daily` rows.
pub(super) struct Rebuilt {
    pub daily: BTreeMap<i32, Daily>,
    pub brand_rows: usize,
    pub category_rows: usize,
    pub visitor_rows: usize,
    pub item_rows: usize,
}

/// How a rebuild's spill directory is named in the temporary directory: then the process id.
const SPILL_PREFIX: &str = "shoplake-rebuild-";

/// Removes the spill directories of rebuilds whose process is gone: one killed mid-rebuild
/// (`kill -9`, a crash) leaves what dropping its directory would have removed, tens to
/// hundreds of MiB on a month. A live process's directory is kept (on Linux, where `/proc`
/// says which are alive; elsewhere nothing is swept).
fn sweep_spills(tmp: &Path) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SPILL_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => {
                tracing::info!(dir = %entry.path().display(), "removed the spill of a rebuild whose process is gone")
            }
            Err(e) => {
                tracing::debug!(dir = %entry.path().display(), error = %e, "could not remove an old rebuild's spill")
            }
        }
    }
}

/// Rebuilds one zone's marts (all but `mart_daily`, whose rows come back) and its state
/// from `events` (a relation of human events) as the engine reads it.
pub(super) async fn rebuild(
    lake: &Lake,
    engine: &Engine,
    zone: &str,
    events: &str,
) -> Result<Rebuilt> {
    let started = Instant::now();
    let bounds = Arc::new(Bounds::sample(engine, events).await?);
    let sampled = started.elapsed();
    let tmp = std::env::temp_dir();
    sweep_spills(&tmp);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{SPILL_PREFIX}{}-", std::process::id()))
        .tempdir_in(&tmp)
        .map_err(io)?;
    let spilled = spill(engine, zone, events, &bounds, dir.path()).await?;
    let scanned = started.elapsed();
    let names = Arc::new(Dictionaries::merge(&spilled));
    let brands = brands_batch(zone, &spilled, &names)?;
    let brand_rows = replace(lake, TableName::MartBrands, zone, &[brands]).await?;
    let categories = categories_batch(zone, &spilled, &names)?;
    let category_rows = replace(lake, TableName::MartCategories, zone, &[categories]).await?;
    let files = Files {
        dir: dir.path().to_owned(),
        streams: spilled.len(),
    };
    drop(spilled);
    let summed = started.elapsed();
    // The users' and the sessions' state at once, each its own task (a Delta write encodes
    // on the task that writes, so one task would take turns): each folds and writes its
    // table one partition at a time, the other beside it.
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (lake, zone, files, names) = (
            lake.clone(),
            zone.to_owned(),
            files.clone(),
            Arc::clone(&names),
        );
        let parts = bounds.users.len() + 1;
        tasks.spawn(async move {
            let mut totals = Totals::default();
            users(&lake, &zone, &files, parts, &names, &mut totals).await?;
            Ok::<_, Error>((State::Users, totals, started.elapsed()))
        });
    }
    {
        let (lake, zone, files) = (lake.clone(), zone.to_owned(), files.clone());
        let parts = bounds.sessions.len() + 1;
        tasks.spawn(async move {
            let mut totals = Totals::default();
            sessions(&lake, &zone, &files, parts, &mut totals).await?;
            Ok::<_, Error>((State::Sessions, totals, started.elapsed()))
        });
    }
    let mut totals = Totals::default();
    let mut session_totals = Totals::default();
    let (mut users_done, mut sessions_done) = (summed, summed);
    // Dropping the set on an error stops the other.
    while let Some(done) = tasks.join_next().await {
        let (state, t, at) =
            done.map_err(|e| Error::Argument(format!("a rebuild task failed: {e}")))??;
        match state {
            State::Users => (totals, users_done) = (t, at),
            State::Sessions => (session_totals, sessions_done) = (t, at),
        }
    }
    totals.add_daily(session_totals.daily);
    let visitors = totals.visitor_sums(&names);
    let visitor_batch = incremental::visitors_batch(zone, &visitors)?;
    let visitor_rows = replace(
        lake,
        TableName::MartCategoryVisitors,
        zone,
        &[visitor_batch],
    )
    .await?;
    totals
        .items
        .sort_unstable_by_key(|r| (r.product, r.day, r.user));
    let item_rows = replace(
        lake,
        TableName::MartItems,
        zone,
        &[items_batch(zone, &totals.items)?],
    )
    .await?;
    totals.daily.retain(|_, d| *d != Daily::default());
    tracing::debug!(
        zone,
        partitions = bounds.users.len() + 1,
        sample_s = sampled.as_secs_f64(),
        scan_s = (scanned - sampled).as_secs_f64(),
        sums_s = (summed - scanned).as_secs_f64(),
        users_s = (users_done - summed).as_secs_f64(),
        sessions_s = (sessions_done - summed).as_secs_f64(),
        marts_s = (started.elapsed() - sessions_done).as_secs_f64(),
        "marts and state rebuilt for a zone"
    );
    Ok(Rebuilt {
        daily: totals.daily,
        brand_rows,
        category_rows,
        visitor_rows,
        item_rows,
    })
}

/// Phase one: the scan, each stream summing and spilling into `dir`; the streams' spills in
/// stream order (the order of their ids and files).
async fn spill(
    engine: &Engine,
    zone: &str,
    events: &str,
    bounds: &Arc<Bounds>,
    dir: &Path,
) -> Result<Vec<Spill>> {
    let tz = parse_zone(zone).map_err(Error::Argument)?;
    let streams = AtomicUsize::new(0);
    let spills = engine
        .fold_partitions(
            &scan_sql(events),
            || Spill::new(dir, streams.fetch_add(1, Ordering::Relaxed), bounds, tz),
            Spill::add,
        )
        .await?;
    let mut spilled: Vec<Spill> = spills
        .into_iter()
        .map(Spill::flushed)
        .collect::<Result<_>>()?;
    // The streams come back as they finish.
    spilled.sort_unstable_by_key(|s| s.stream);
    if spilled.iter().enumerate().any(|(i, s)| s.stream != i) {
        return Err(Error::Argument("a rebuild lost a scan stream".into()));
    }
    Ok(spilled)
}

/// The scan the records are spilled from: the columns as stored (local days and hours are
/// the stream's to compute, one zone lookup per minute of times rather than per row).
fn scan_sql(events: &str) -> String {
    format!(
        "SELECT user_id, user_session, product_id, event_type, event_time, event_date,
                category_code, brand, price
         FROM {events}"
    )
}

fn io(e: std::io::Error) -> Error {
    Error::from(DataFusionError::IoError(e))
}

/// Which state table a rebuild task wrote.
enum State {
    Users,
    Sessions,
}

/// Where the partitions' records are: `u{part}-{stream}` and `s{part}-{stream}` in `dir`.
#[derive(Debug, Clone)]
struct Files {
    dir: PathBuf,
    streams: usize,
}

impl Files {
    /// The existing files of a partition, with the stream that wrote each.
    fn of(&self, prefix: char, part: usize) -> Vec<(PathBuf, usize)> {
        (0..self.streams)
            .map(|s| (file(&self.dir, prefix, part, s), s))
            .filter(|(p, _)| p.exists())
            .collect()
    }
}

fn file(dir: &Path, prefix: char, part: usize, stream: usize) -> PathBuf {
    dir.join(format!("{prefix}{part}-{stream}"))
}

/// The partitions' bounds: partition `i` holds the keys from `bounds[i - 1]` (included) to
/// `bounds[i]` (excluded).
#[derive(Debug, Default)]
struct Bounds {
    users: Vec<i64>,
    sessions: Vec<String>,
}

impl Bounds {
    /// Cuts the keys of a sample of the events into ranges of about [`PART_EVENTS`] events.
    async fn sample(engine: &Engine, events: &str) -> Result<Bounds> {
        let rate = 1.0 / SAMPLE_EVERY as f64;
        let out = engine
            .run(&format!(
                "SELECT user_id, CAST(user_session AS VARCHAR) AS s FROM {events}
                 WHERE random() < {rate}"
            ))
            .await?;
        let mut users = Vec::new();
        let mut sessions = Vec::new();
        for b in &out.batches {
            let c = Columns::new(b);
            users.extend(c.i64("user_id")?.into_iter().flatten());
            sessions.extend(c.str("s")?.into_iter().flatten());
        }
        let parts = (users.len() * SAMPLE_EVERY).div_ceil(PART_EVENTS).max(1);
        users.sort_unstable();
        sessions.sort_unstable();
        Ok(Bounds {
            users: cuts(&users, parts),
            sessions: cuts(&sessions, parts),
        })
    }

    fn user_part(&self, user: i64) -> usize {
        self.users.partition_point(|b| *b <= user)
    }

    fn session_part(&self, session: &str) -> usize {
        self.sessions.partition_point(|b| b.as_str() <= session)
    }
}

/// The keys cutting sorted samples into `parts` ranges (fewer when keys repeat).
fn cuts<T: Clone + PartialEq>(sorted: &[T], parts: usize) -> Vec<T> {
    let mut out: Vec<T> = (1..parts)
        .map(|i| sorted[i * sorted.len() / parts].clone())
        .collect();
    out.dedup();
    out
}

/// Texts by id (0 is null), as one scan stream met them.
#[derive(Debug, Default)]
struct Names {
    ids: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Names {
    fn id(&mut self, s: Option<&str>) -> u32 {
        let Some(s) = s else { return 0 };
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        self.names.push(s.into());
        let id = self.names.len() as u32;
        self.ids.insert(s.into(), id);
        id
    }

    fn name(&self, id: u32) -> Option<&str> {
        id.checked_sub(1).map(|i| &*self.names[i as usize])
    }

    /// The ids of a column's texts. Within one array equal views are equal texts, and a
    /// column decoded from a Parquet dictionary repeats its views: each distinct view is
    /// looked up once.
    fn ids(&mut self, a: &arrow::array::StringViewArray) -> Vec<u32> {
        let mut by_view: HashMap<u128, u32> = HashMap::default();
        (0..a.len())
            .map(|i| {
                if a.is_null(i) {
                    return 0;
                }
                let view = a.views()[i];
                match by_view.get(&view) {
                    Some(id) => *id,
                    None => {
                        let id = self.id(Some(a.value(i)));
                        by_view.insert(view, id);
                        id
                    }
                }
            })
            .collect()
    }
}

/// A user's record as spilled: the events of a cell (a UTC day, local day, hour and
/// category code) summed, or one cart or purchase. Ids are the spilling stream's until read
/// back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct UserRec {
    user: i64,
    /// The time of the event (of a cell's first).
    t: i64,
    product: i64,
    cents: i64,
    /// A cell's events (1 for a cart or purchase).
    events: i64,
    utc_day: i32,
    day: i32,
    /// The category code's id (the stream's, then the global one).
    cc: u32,
    /// The brand's id (the stream's, then the global one).
    brand: u32,
    hour: u8,
    /// [`CELL`], [`CART`] or [`PURCHASE`] (an event's own kind before it is spilled).
    kind: u8,
    /// The full category's id at level 0 (set when read back).
    code: u32,
}

/// A spilled cart or purchase: its kind, then every field.
const USER_REC: usize = 58;

/// A spilled cell: its kind, then the fields a cell has (no product, price or brand).
const CELL_REC: usize = 38;

impl UserRec {
    fn write(&self, w: &mut impl Write) -> std::io::Result<()> {
        let mut b = [0u8; USER_REC];
        b[0] = self.kind;
        b[1..9].copy_from_slice(&self.user.to_le_bytes());
        b[9..17].copy_from_slice(&self.t.to_le_bytes());
        b[17..25].copy_from_slice(&self.events.to_le_bytes());
        b[25..29].copy_from_slice(&self.utc_day.to_le_bytes());
        b[29..33].copy_from_slice(&self.day.to_le_bytes());
        b[33..37].copy_from_slice(&self.cc.to_le_bytes());
        b[37] = self.hour;
        if self.kind == CELL {
            return w.write_all(&b[..CELL_REC]);
        }
        b[38..46].copy_from_slice(&self.product.to_le_bytes());
        b[46..54].copy_from_slice(&self.cents.to_le_bytes());
        b[54..58].copy_from_slice(&self.brand.to_le_bytes());
        w.write_all(&b)
    }

    /// The record at the start of `b` and its length (`None` if `b` ends inside it).
    fn read(b: &[u8]) -> Option<(UserRec, usize)> {
        let kind = *b.first()?;
        let len = if kind == CELL { CELL_REC } else { USER_REC };
        let b = b.get(..len)?;
        let i64_at = |at: usize| i64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default());
        let mut rec = UserRec {
            user: i64_at(1),
            t: i64_at(9),
            events: i64_at(17),
            utc_day: u32_at(25) as i32,
            day: u32_at(29) as i32,
            cc: u32_at(33),
            hour: b[37],
            kind,
            ..UserRec::default()
        };
        if kind != CELL {
            rec.product = i64_at(38);
            rec.cents = i64_at(46);
            rec.brand = u32_at(54);
        }
        Some((rec, len))
    }
}

/// A session's part as spilled: one user's events of the session on a local day that fell
/// on a UTC day, summed (the session's text follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SessionRec {
    user: i64,
    utc_day: i32,
    day: i32,
    part: Part,
}

const SESSION_REC: usize = 52;

impl SessionRec {
    fn write(&self, session: &str, w: &mut impl Write) -> std::io::Result<()> {
        let mut b = [0u8; SESSION_REC];
        b[0..8].copy_from_slice(&self.user.to_le_bytes());
        b[8..12].copy_from_slice(&self.utc_day.to_le_bytes());
        b[12..16].copy_from_slice(&self.day.to_le_bytes());
        b[16..24].copy_from_slice(&self.part.events.to_le_bytes());
        b[24..32].copy_from_slice(&self.part.first.to_le_bytes());
        b[32..40].copy_from_slice(&self.part.carts.to_le_bytes());
        b[40..48].copy_from_slice(&self.part.purchases.to_le_bytes());
        b[48..52].copy_from_slice(&(session.len() as u32).to_le_bytes());
        w.write_all(&b)?;
        w.write_all(session.as_bytes())
    }

    /// The next record and its session's text (`None` at the end of the file).
    fn read(r: &mut impl Read, session: &mut Vec<u8>) -> std::io::Result<Option<SessionRec>> {
        let mut b = [0u8; SESSION_REC];
        match r.read_exact(&mut b) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let i64_at = |at: usize| i64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default());
        session.resize(u32_at(48) as usize, 0);
        r.read_exact(session)?;
        Ok(Some(SessionRec {
            user: i64_at(0),
            utc_day: u32_at(8) as i32,
            day: u32_at(12) as i32,
            part: Part {
                events: i64_at(16),
                first: i64_at(24),
                carts: i64_at(32),
                purchases: i64_at(40),
            },
        }))
    }
}

/// Where a canonical UUID's text has its hyphens.
fn is_hyphen_at(i: usize) -> bool {
    matches!(i, 8 | 13 | 18 | 23)
}

/// The bits of a canonical UUID's text (`None` for any other text): 36 bytes, lowercase hex
/// digits, hyphens at 8, 13, 18 and 23, as nearly every session is. A session fold keys such
/// a session by its 128 bits, whose order is its text's: it sorts and compares 16 bytes
/// rather than texts in an arena.
fn uuid_bits(text: &[u8]) -> Option<u128> {
    if text.len() != 36 {
        return None;
    }
    let mut bits: u128 = 0;
    for (i, &c) in text.iter().enumerate() {
        let digit = match c {
            b'-' if is_hyphen_at(i) => continue,
            b'0'..=b'9' if !is_hyphen_at(i) => c - b'0',
            b'a'..=b'f' if !is_hyphen_at(i) => c - b'a' + 10,
            _ => return None,
        };
        bits = (bits << 4) | u128::from(digit);
    }
    Some(bits)
}

/// The canonical text of a UUID's bits.
fn uuid_text(bits: u128) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [b'-'; 36];
    let mut shift = 128;
    for (i, c) in text.iter_mut().enumerate() {
        if !is_hyphen_at(i) {
            shift -= 4;
            *c = HEX[((bits >> shift) & 0xf) as usize];
        }
    }
    text
}

/// `mart_brands`' sums of a (day, brand, category code): events, views, carts, purchases,
/// revenue and viewed prices in cents.
type BrandSums = [i64; 6];

/// `mart_categories`' sums of a (day, hour, category code): views, carts, purchases,
/// revenue in cents, events.
type CategorySums = [i64; 5];

/// A cell of a user: (user, UTC day, local day, hour, category code id).
type CellKey = (i64, i32, i32, u8, u32);

/// A session part's key within its session: (user, UTC day, local day).
type PartOf = (i64, i32, i32);

/// A session open in a scan stream's window: its partition, its latest event's time, its
/// parts so far (nearly always one), and the cell of its latest event with the events it
/// counted there since it last moved (and their first time).
struct OpenSession {
    partition: u32,
    last: i64,
    first: (PartOf, Part),
    more: Vec<(PartOf, Part)>,
    cell: (CellKey, (i64, i64)),
}

impl OpenSession {
    fn new(partition: u32, of: PartOf, t: i64, kind: u8, cell: CellKey) -> OpenSession {
        OpenSession {
            partition,
            last: t,
            first: (of, Part::of(t, kind)),
            more: Vec::new(),
            cell: (cell, (1, t)),
        }
    }

    /// Counts an event of `cell` at `t`: here when it is the session's latest cell, else it
    /// becomes that, and the one it replaces comes back for the window.
    fn count(&mut self, cell: CellKey, t: i64) -> Option<(CellKey, (i64, i64))> {
        if self.cell.0 == cell {
            let counted = &mut self.cell.1;
            counted.0 += 1;
            counted.1 = counted.1.min(t);
            None
        } else {
            Some(std::mem::replace(&mut self.cell, (cell, (1, t))))
        }
    }

    fn add(&mut self, of: PartOf, t: i64, kind: u8) {
        self.last = self.last.max(t);
        if self.first.0 == of {
            self.first.1.add(t, kind);
        } else if let Some((_, part)) = self.more.iter_mut().find(|(k, _)| *k == of) {
            part.add(t, kind);
        } else {
            self.more.push((of, Part::of(t, kind)));
        }
    }

    fn parts(&self) -> impl Iterator<Item = &(PartOf, Part)> {
        std::iter::once(&self.first).chain(&self.more)
    }
}

/// One local day's brand sums in a scan stream, by (brand id, category code id).
struct BrandDay {
    day: i32,
    sums: HashMap<(u32, u32), BrandSums>,
}

/// One scan stream's spill files, names and sums.
struct Spill {
    dir: PathBuf,
    stream: usize,
    bounds: Arc<Bounds>,
    users: Vec<Option<BufWriter<File>>>,
    sessions: Vec<Option<BufWriter<File>>>,
    codes: Names,
    brands: Names,
    /// The brand sums of the local days still open (at most [`OPEN_DAYS`], each its own
    /// map, so the hot one stays a day's size) and the category sums; and the sums of the
    /// days swept out.
    brand_days: Vec<BrandDay>,
    category_sums: HashMap<(i32, u8, u32), CategorySums>,
    brands_done: Vec<((i32, u32, u32), BrandSums)>,
    categories_done: Vec<((i32, u8, u32), CategorySums)>,
    /// The window's cells: their events and first time.
    cells: HashMap<CellKey, (i64, i64)>,
    /// The window's open sessions.
    open: HashMap<Box<str>, OpenSession>,
    /// The latest event's time and local day the stream has met.
    now: i64,
    today: i32,
    /// The sizes at which the windows are next swept, and at which they are spilled whole.
    sweep: Sweep,
    /// The zone's local days and hours.
    local: LocalDays,
}

/// When a stream's windows are swept (see [`SWEEP_CELLS`]) or spilled whole.
#[derive(Debug, Clone, Copy)]
struct Sweep {
    /// The sizes of the next sweeps.
    at: Sizes,
    /// The sizes of the first.
    base: Sizes,
    cell_window: usize,
    session_window: usize,
}

#[derive(Debug, Clone, Copy)]
struct Sizes {
    cells: usize,
    sessions: usize,
    sums: usize,
}

impl Sweep {
    fn new(base: Sizes, cell_window: usize, session_window: usize) -> Sweep {
        Sweep {
            at: base,
            base,
            cell_window,
            session_window,
        }
    }
}

impl Default for Sweep {
    fn default() -> Sweep {
        let base = Sizes {
            cells: SWEEP_CELLS,
            sessions: SWEEP_SESSIONS,
            sums: SWEEP_SUMS,
        };
        Sweep::new(base, WINDOW, SESSION_WINDOW)
    }
}

/// The size at which a window swept down to `left` is next swept: twice that, at least
/// `base`, so sweeps cost a constant per entry however much is left open.
fn next_sweep(base: usize, left: usize) -> usize {
    base.max(left.saturating_mul(2))
}

/// A partition's spill file, created when first written to.
fn writer(
    slot: &mut Option<BufWriter<File>>,
    path: impl FnOnce() -> PathBuf,
) -> Result<&mut BufWriter<File>> {
    if slot.is_none() {
        *slot = Some(BufWriter::with_capacity(
            1 << 16,
            File::create(path()).map_err(io)?,
        ));
    }
    slot.as_mut()
        .ok_or_else(|| Error::Argument("a spill file went missing".into()))
}

impl Spill {
    fn new(dir: &Path, stream: usize, bounds: &Arc<Bounds>, tz: Tz) -> Spill {
        Spill {
            local: LocalDays::new(tz),
            dir: dir.to_owned(),
            stream,
            bounds: Arc::clone(bounds),
            users: (0..=bounds.users.len()).map(|_| None).collect(),
            sessions: (0..=bounds.sessions.len()).map(|_| None).collect(),
            codes: Names::default(),
            brands: Names::default(),
            brand_days: Vec::new(),
            category_sums: HashMap::default(),
            brands_done: Vec::new(),
            categories_done: Vec::new(),
            cells: HashMap::default(),
            open: HashMap::default(),
            now: i64::MIN,
            today: i32::MIN,
            sweep: Sweep::default(),
        }
    }

    /// Sums a batch of the scan's rows and spills what the windows fill.
    fn add(&mut self, b: RecordBatch) -> Result<()> {
        let c = Columns::new(&b);
        let user = c.int64_array("user_id")?;
        let session = c.string_view_array("user_session")?;
        let product = c.int64_array("product_id")?;
        let event_type = c.string_view_array("event_type")?;
        let t = c.int64_array("event_time")?;
        let utc_day = c.int64_array("event_date")?;
        let category_code = c.string_view_array("category_code")?;
        let brand = c.string_view_array("brand")?;
        let cents = c.cents("price")?;
        let codes = self.codes.ids(&category_code);
        let brands = self.brands.ids(&brand);
        for i in 0..b.num_rows() {
            let kind = match event_type.value(i) {
                "view" => VIEW,
                "cart" => CART,
                "purchase" => PURCHASE,
                _ => OTHER,
            };
            let (day, hour) = self.local.day_and_hour(t.value(i));
            let rec = UserRec {
                user: user.value(i),
                t: t.value(i),
                product: product.value(i),
                cents: if cents.is_valid(i) { cents.value(i) } else { 0 },
                events: 1,
                utc_day: utc_day.value(i) as i32,
                day,
                cc: codes[i],
                brand: brands[i],
                hour,
                kind,
                code: 0,
            };
            self.event(&rec, text(&session, i))?;
        }
        Ok(())
    }

    /// Takes one event (its own kind in `rec.kind`, ids this stream's).
    fn event(&mut self, rec: &UserRec, session: Option<&str>) -> Result<()> {
        self.now = self.now.max(rec.t);
        self.today = self.today.max(rec.day);
        self.sum(rec);
        if rec.kind == CART || rec.kind == PURCHASE {
            self.spill_user(rec)?;
        }
        let key = (rec.user, rec.utc_day, rec.day, rec.hour, rec.cc);
        // A session's events mostly fall in the cell of its event before (three in four of a
        // generated day's, bench/session-cells.sh): that cell is counted in the session, the
        // others in the map.
        let mut into_map = Some((key, (1, rec.t)));
        if let Some(s) = session {
            let of = (rec.user, rec.utc_day, rec.day);
            match self.open.get_mut(s) {
                Some(open) => {
                    open.add(of, rec.t, rec.kind);
                    into_map = open.count(key, rec.t);
                }
                None => {
                    let partition = self.bounds.session_part(s) as u32;
                    let open = OpenSession::new(partition, of, rec.t, rec.kind, key);
                    self.open.insert(s.into(), open);
                    into_map = None;
                }
            }
        }
        if let Some((key, counted)) = into_map {
            self.count_cell(key, counted);
        }
        if session.is_some() && self.open.len() >= self.sweep.at.sessions {
            self.sweep_sessions()?;
        }
        if self.cells.len() >= self.sweep.at.cells {
            self.sweep_cells()?;
        }
        if self.category_sums.len() >= self.sweep.at.sums {
            self.sweep_sums();
        }
        Ok(())
    }

    /// Adds a cell's events and first time to the window's.
    fn count_cell(&mut self, key: CellKey, (events, first): (i64, i64)) {
        let cell = self.cells.entry(key).or_insert((0, first));
        cell.0 += events;
        cell.1 = cell.1.min(first);
    }

    /// Spills the sessions idle for [`SESSION_IDLE_US`]; all of them when that leaves a
    /// full window.
    fn sweep_sessions(&mut self) -> Result<()> {
        let idle = self.now.saturating_sub(SESSION_IDLE_US);
        let done: Vec<(Box<str>, OpenSession)> =
            self.open.extract_if(|_, o| o.last < idle).collect();
        self.spill_sessions(done)?;
        if self.open.len() >= self.sweep.session_window {
            let all: Vec<(Box<str>, OpenSession)> = self.open.drain().collect();
            self.spill_sessions(all)?;
        }
        self.sweep.at.sessions = next_sweep(self.sweep.base.sessions, self.open.len())
            .min(self.sweep.session_window.max(1));
        Ok(())
    }

    /// Spills sessions' parts, each to its session's partition; their cells go to the
    /// window's.
    fn spill_sessions(&mut self, done: Vec<(Box<str>, OpenSession)>) -> Result<()> {
        for (_, open) in &done {
            self.count_cell(open.cell.0, open.cell.1);
        }
        let (dir, stream) = (&self.dir, self.stream);
        for (name, open) in done {
            let p = open.partition as usize;
            let w = writer(&mut self.sessions[p], || file(dir, 's', p, stream))?;
            for &((user, utc_day, day), part) in open.parts() {
                let rec = SessionRec {
                    user,
                    utc_day,
                    day,
                    part,
                };
                rec.write(&name, w).map_err(io)?;
            }
        }
        Ok(())
    }

    /// Spills the cells that can get no more events, those of the local hours before the
    /// stream's latest (a cell is a local hour; a later event of one is a piece of it the
    /// fold merges); all of them when that leaves a full window.
    fn sweep_cells(&mut self) -> Result<()> {
        // One offset for the window: near a change of offset a cell may be spilled an hour
        // early or late, which costs a piece, never a count.
        let offset = self.local.offset(self.now);
        let hour = |t: i64| t.saturating_add(offset).div_euclid(MICROS_PER_HOUR);
        let now = hour(self.now);
        let done: Vec<(CellKey, (i64, i64))> =
            self.cells.extract_if(|_, c| hour(c.1) < now).collect();
        self.spill_cells(done)?;
        if self.cells.len() >= self.sweep.cell_window {
            let all: Vec<(CellKey, (i64, i64))> = self.cells.drain().collect();
            self.spill_cells(all)?;
        }
        self.sweep.at.cells =
            next_sweep(self.sweep.base.cells, self.cells.len()).min(self.sweep.cell_window.max(1));
        Ok(())
    }

    /// Moves the category sums of the days before yesterday (by the stream's latest local
    /// day) out of the map still summed into.
    fn sweep_sums(&mut self) {
        let open = self.today.saturating_sub(1);
        self.categories_done
            .extend(self.category_sums.extract_if(|k, _| k.0 < open));
        self.sweep.at.sums = next_sweep(self.sweep.base.sums, self.category_sums.len());
    }

    /// The brand sums of a local day, opened (and the earliest open day's swept out when
    /// [`OPEN_DAYS`] are) if it is not open.
    fn brand_day(&mut self, day: i32) -> &mut HashMap<(u32, u32), BrandSums> {
        let i = match self.brand_days.iter().rposition(|d| d.day == day) {
            Some(i) => i,
            None => {
                if self.brand_days.len() >= OPEN_DAYS {
                    let earliest =
                        (0..self.brand_days.len()).min_by_key(|&i| self.brand_days[i].day);
                    if let Some(i) = earliest {
                        let done = self.brand_days.remove(i);
                        self.close_brand_day(done);
                    }
                }
                self.brand_days.push(BrandDay {
                    day,
                    sums: HashMap::default(),
                });
                self.brand_days.len() - 1
            }
        };
        &mut self.brand_days[i].sums
    }

    /// Moves a day's brand sums out of the ones still summed into.
    fn close_brand_day(&mut self, d: BrandDay) {
        self.brands_done.extend(
            d.sums
                .into_iter()
                .map(|((brand, cc), sums)| ((d.day, brand, cc), sums)),
        );
    }

    fn spill_user(&mut self, rec: &UserRec) -> Result<()> {
        let (dir, stream) = (&self.dir, self.stream);
        let p = self.bounds.user_part(rec.user);
        rec.write(writer(&mut self.users[p], || file(dir, 'u', p, stream))?)
            .map_err(io)
    }

    /// Spills cells to their users' partitions.
    fn spill_cells(&mut self, cells: Vec<(CellKey, (i64, i64))>) -> Result<()> {
        for ((user, utc_day, day, hour, cc), (events, first)) in cells {
            let rec = UserRec {
                user,
                t: first,
                events,
                utc_day,
                day,
                cc,
                hour,
                kind: CELL,
                ..UserRec::default()
            };
            self.spill_user(&rec)?;
        }
        Ok(())
    }

    /// Counts an event into `mart_brands`' and `mart_categories`' sums.
    fn sum(&mut self, r: &UserRec) {
        let (view, cart, purchase) = (r.kind == VIEW, r.kind == CART, r.kind == PURCHASE);
        if r.brand != 0 {
            let s = self.brand_day(r.day).entry((r.brand, r.cc)).or_default();
            s[0] += 1;
            s[1] += i64::from(view);
            s[2] += i64::from(cart);
            s[3] += i64::from(purchase);
            s[4] += if purchase { r.cents } else { 0 };
            s[5] += if view { r.cents } else { 0 };
        }
        let s = self.category_sums.entry((r.day, r.hour, r.cc)).or_default();
        s[0] += i64::from(view);
        s[1] += i64::from(cart);
        s[2] += i64::from(purchase);
        s[3] += if purchase { r.cents } else { 0 };
        s[4] += 1;
    }

    /// Spills what the windows hold, then flushes and closes the spill files.
    fn flushed(mut self) -> Result<Spill> {
        // The sessions first: their cells join the window's.
        let open: Vec<(Box<str>, OpenSession)> = self.open.drain().collect();
        self.spill_sessions(open)?;
        for d in std::mem::take(&mut self.brand_days) {
            self.close_brand_day(d);
        }
        let cells: Vec<(CellKey, (i64, i64))> = self.cells.drain().collect();
        self.spill_cells(cells)?;
        for w in self.users.iter_mut().chain(self.sessions.iter_mut()) {
            if let Some(mut w) = w.take() {
                w.flush().map_err(io)?;
            }
        }
        Ok(self)
    }
}

/// The names of every stream under one set of ids, and the category levels of each code.
struct Dictionaries {
    /// Per stream, its category code ids to the global ones.
    codes: Vec<Vec<u32>>,
    /// Per stream, its brand ids to the global ones.
    brands: Vec<Vec<u32>>,
    /// Global category code ids (0 null) to their texts.
    code_names: Names,
    brand_names: Names,
    /// Per global category code id, its category's id at levels 0–3 in `categories`.
    levels: Vec<[u32; 4]>,
    /// (level, name) by id.
    categories: Vec<(i64, String)>,
}

impl Dictionaries {
    fn merge(spills: &[Spill]) -> Dictionaries {
        let mut code_names = Names::default();
        let mut brand_names = Names::default();
        let remap = |local: &Names, global: &mut Names| -> Vec<u32> {
            std::iter::once(0)
                .chain(local.names.iter().map(|n| global.id(Some(&**n))))
                .collect()
        };
        let codes = spills
            .iter()
            .map(|s| remap(&s.codes, &mut code_names))
            .collect();
        let brands = spills
            .iter()
            .map(|s| remap(&s.brands, &mut brand_names))
            .collect();
        let mut ids: HashMap<(i64, String), u32> = HashMap::default();
        let mut categories = Vec::new();
        let levels = (0..=code_names.names.len() as u32)
            .map(|cc| {
                let mut at = [0u32; 4];
                for (level, id) in at.iter_mut().enumerate() {
                    let key = (
                        level as i64,
                        category_at(code_names.name(cc), level).to_owned(),
                    );
                    *id = *ids.entry(key.clone()).or_insert_with(|| {
                        categories.push(key);
                        (categories.len() - 1) as u32
                    });
                }
                at
            })
            .collect();
        Dictionaries {
            codes,
            brands,
            code_names,
            brand_names,
            levels,
            categories,
        }
    }
}

/// Sums swept out of a stream's map, as the map iterates.
fn done<K, V>(swept: &[(K, V)]) -> impl Iterator<Item = (&K, &V)> {
    swept.iter().map(|(k, v)| (k, v))
}

/// `mart_brands`' rows of a zone from the streams' sums.
fn brands_batch(zone: &str, spills: &[Spill], names: &Dictionaries) -> Result<RecordBatch> {
    let mut rows: BTreeMap<(i32, u32, u32), BrandSums> = BTreeMap::new();
    for (stream, s) in spills.iter().enumerate() {
        for &((day, brand, cc), sums) in &s.brands_done {
            let brand = names.brands[stream][brand as usize];
            let category = names.levels[names.codes[stream][cc as usize] as usize][1];
            let row = rows.entry((day, brand, category)).or_default();
            for (to, from) in row.iter_mut().zip(sums) {
                *to += from;
            }
        }
    }
    let n = rows.len();
    let keys = || rows.keys();
    let sums = |i: usize| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rows.values().map(|s| s[i])))
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("zone", Arc::new(StringArray::from(vec![zone; n]))),
        (
            "day",
            Arc::new(Date32Array::from_iter_values(keys().map(|k| k.0))),
        ),
        (
            "brand",
            Arc::new(StringArray::from_iter(
                keys().map(|k| names.brand_names.name(k.1)),
            )),
        ),
        (
            "category",
            Arc::new(StringArray::from_iter_values(
                keys().map(|k| names.categories[k.2 as usize].1.as_str()),
            )),
        ),
        ("events", sums(0)),
        ("views", sums(1)),
        ("carts", sums(2)),
        ("purchases", sums(3)),
        ("revenue_cents", sums(4)),
        ("view_price_cents", sums(5)),
    ];
    Ok(RecordBatch::try_from_iter(columns)?)
}

/// `mart_categories`' rows of a zone: the streams' sums per day, hour and category at each
/// level.
fn categories_batch(zone: &str, spills: &[Spill], names: &Dictionaries) -> Result<RecordBatch> {
    let mut rows: BTreeMap<(i32, u8, u32), CategorySums> = BTreeMap::new();
    for (stream, s) in spills.iter().enumerate() {
        for (&(day, hour, cc), sums) in s.category_sums.iter().chain(done(&s.categories_done)) {
            for id in names.levels[names.codes[stream][cc as usize] as usize] {
                let row = rows.entry((day, hour, id)).or_default();
                for (to, from) in row.iter_mut().zip(sums) {
                    *to += from;
                }
            }
        }
    }
    let n = rows.len();
    let keys = || rows.keys();
    let sums = |i: usize| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rows.values().map(|s| s[i])))
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("zone", Arc::new(StringArray::from(vec![zone; n]))),
        (
            "day",
            Arc::new(Date32Array::from_iter_values(keys().map(|k| k.0))),
        ),
        (
            "hour",
            Arc::new(Int64Array::from_iter_values(keys().map(|k| i64::from(k.1)))),
        ),
        (
            "level",
            Arc::new(Int64Array::from_iter_values(
                keys().map(|k| names.categories[k.2 as usize].0),
            )),
        ),
        (
            "category",
            Arc::new(StringArray::from_iter_values(
                keys().map(|k| names.categories[k.2 as usize].1.as_str()),
            )),
        ),
        ("views", sums(0)),
        ("carts", sums(1)),
        ("purchases", sums(2)),
        ("revenue_cents", sums(3)),
        ("events", sums(4)),
    ];
    Ok(RecordBatch::try_from_iter(columns)?)
}

/// The users' and sessions' contributions, summed over the partitions.
#[derive(Default)]
struct Totals {
    daily: BTreeMap<i32, Daily>,
    /// `mart_category_visitors` counts by [`visitor_key`].
    visitors: HashMap<u128, i64>,
    items: Vec<ItemRow>,
}

impl Totals {
    fn add_daily(&mut self, daily: BTreeMap<i32, Daily>) {
        for (day, d) in daily {
            self.daily.entry(day).or_default().add(&d);
        }
    }

    /// The visitor counts as [`Sums`] (names in place of ids).
    fn visitor_sums(&self, names: &Dictionaries) -> Sums {
        let mut sums = Sums::default();
        for (&key, &n) in &self.visitors {
            let chain = key >> 72;
            let (by, bucket, id) = (
                (chain >> 39) & 1,
                ((chain >> 32) & 0x7f) as u8,
                chain as u32,
            );
            let day = unflip((key >> 40) as u32);
            let prev = ((key >> 32) & 1 == 1).then(|| unflip(key as u32));
            let visitor = VisitorKey {
                level: names.categories[id as usize].0 as u8,
                by: if by == 0 { By::Hour } else { By::Weekday },
                bucket,
                category: names.categories[id as usize].1.clone(),
                day,
                prev_day: prev,
            };
            sums.visitors.insert(visitor, n);
        }
        sums
    }
}

/// A day as bits that sort as the day does (the sign bit flipped).
fn flip(day: i32) -> u32 {
    (day as u32) ^ (1 << 31)
}

fn unflip(bits: u32) -> i32 {
    (bits ^ (1 << 31)) as i32
}

/// A chain of days: a category (its id, which names its level) in a bucket (an hour or a
/// weekday).
fn chain(by: By, bucket: u8, category: u32) -> u128 {
    let by = u128::from(by == By::Weekday);
    (by << 39) | (u128::from(bucket) << 32) | u128::from(category)
}

/// A `mart_category_visitors` key: a chain's day and the previous day of the chain (bits
/// 72–111 the chain, 40–71 the day, 32 whether there is a previous day, 0–31 that day).
fn visitor_key(chain: u128, day: i32, prev: Option<i32>) -> u128 {
    let prev = prev.map_or(0, |p| (1u128 << 32) | u128::from(flip(p)));
    (chain << 72) | (u128::from(flip(day)) << 40) | prev
}

/// Runs a partition's fold on a blocking thread; its time is logged at trace level.
fn fold_on_thread<T: Send + 'static>(
    what: &'static str,
    part: usize,
    fold: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let out = fold();
        tracing::trace!(
            what,
            part,
            fold_s = started.elapsed().as_secs_f64(),
            "partition folded"
        );
        out
    })
}

/// Folds the user partitions in order, the next folding while one is written as part of
/// run 1.
async fn users(
    lake: &Lake,
    zone: &str,
    files: &Files,
    parts: usize,
    names: &Arc<Dictionaries>,
    totals: &mut Totals,
) -> Result<()> {
    let mut folded = futures::stream::iter(0..parts)
        .map(|p| {
            let files = files.of('u', p);
            let names = Arc::clone(names);
            fold_on_thread("users", p, move || fold_users(&files, &names))
        })
        .buffered(2);
    let table = TableName::MartUserState;
    let mut t = lake.ensure(table).await?;
    let mut first = true;
    let mut writing = std::time::Duration::ZERO;
    while let Some(out) = folded.next().await {
        let out = out.map_err(|e| Error::Argument(format!("a rebuild task failed: {e}")))??;
        if first || out.rows.num_rows() > 0 {
            let started = Instant::now();
            t = state::write(t, table, "user_id", zone, 1, &out.rows, first).await?;
            writing += started.elapsed();
            first = false;
        }
        totals.add_daily(out.daily);
        for (k, n) in out.visitors {
            *totals.visitors.entry(k).or_default() += n;
        }
        totals.items.extend(out.items);
    }
    tracing::debug!(
        zone,
        write_s = writing.as_secs_f64(),
        "users' state written"
    );
    Ok(())
}

/// What a user partition's fold gives.
struct UsersOut {
    rows: RecordBatch,
    daily: BTreeMap<i32, Daily>,
    visitors: HashMap<u128, i64>,
    items: Vec<ItemRow>,
}

/// Reads a user partition's records, with global ids.
fn read_users(files: &[(PathBuf, usize)], names: &Dictionaries) -> Result<Vec<UserRec>> {
    let mut recs = Vec::new();
    for (path, stream) in files {
        // A partition's file is a few tens of MiB (a partition holds about PART_EVENTS).
        let bytes = std::fs::read(path).map_err(io)?;
        recs.reserve(bytes.len() / CELL_REC);
        let mut at = 0;
        while at < bytes.len() {
            let Some((mut rec, len)) = UserRec::read(&bytes[at..]) else {
                return Err(Error::Argument(format!(
                    "a rebuild's spill file {} ends inside a record",
                    path.display()
                )));
            };
            at += len;
            rec.cc = names.codes[*stream][rec.cc as usize];
            rec.brand = names.brands[*stream][rec.brand as usize];
            rec.code = names.levels[rec.cc as usize][0];
            recs.push(rec);
        }
    }
    Ok(recs)
}

/// Folds one user partition: its users' state rows (sorted by user) and contributions.
fn fold_users(files: &[(PathBuf, usize)], names: &Dictionaries) -> Result<UsersOut> {
    fold_user_recs(read_users(files, names)?, names)
}

/// Folds a user partition's records (global ids).
fn fold_user_recs(mut recs: Vec<UserRec>, names: &Dictionaries) -> Result<UsersOut> {
    // Each user's cells first, in order; then their carts and purchases.
    recs.sort_unstable_by_key(|r| {
        (
            r.user,
            r.kind != CELL,
            r.utc_day,
            r.day,
            r.hour,
            r.code,
            r.t,
        )
    });
    let mut rows = StateRows::default();
    let mut daily = BTreeMap::new();
    let mut visitors = HashMap::default();
    let mut items = Vec::new();
    let mut tuples = Vec::new();
    for user in recs.chunk_by(|a, b| a.user == b.user) {
        let (cells, others) = user.split_at(user.partition_point(|r| r.kind == CELL));
        rows.user(user[0].user, cells, others, names);
        user_daily(cells, &mut daily);
        user_visitors(cells, names, &mut tuples, &mut visitors);
        user_items(user[0].user, others, names, &mut items);
    }
    Ok(UsersOut {
        rows: rows.finish()?,
        daily,
        visitors,
        items,
    })
}

/// A user's contribution to `mart_daily` (from their cells): a visitor and their events on
/// each local day, and a new visitor on the day of their first event.
fn user_daily(cells: &[UserRec], daily: &mut BTreeMap<i32, Daily>) {
    let mut days: Vec<(i32, i64)> = cells.iter().map(|r| (r.day, r.events)).collect();
    days.sort_unstable();
    for same in days.chunk_by(|a, b| a.0 == b.0) {
        let row = daily.entry(same[0].0).or_default();
        row.visitors += 1;
        row.events += same.iter().map(|d| d.1).sum::<i64>();
    }
    if let Some(first) = cells.iter().min_by_key(|r| r.t) {
        daily.entry(first.day).or_default().new_visitors += 1;
    }
}

/// A user's contribution to `mart_category_visitors` (from their cells): for each (bucket,
/// category) at each level, each day seen in it, under the previous such day.
fn user_visitors(
    recs: &[UserRec],
    names: &Dictionaries,
    tuples: &mut Vec<u128>,
    visitors: &mut HashMap<u128, i64>,
) {
    tuples.clear();
    let cells = recs.chunk_by(|a, b| (a.day, a.hour, a.code) == (b.day, b.hour, b.code));
    for cell in cells {
        let r = &cell[0];
        let weekday = super::contrib::weekday(r.day);
        for id in names.levels[r.cc as usize] {
            let day = u128::from(flip(r.day));
            tuples.push((chain(By::Hour, r.hour, id) << 32) | day);
            tuples.push((chain(By::Weekday, weekday, id) << 32) | day);
        }
    }
    tuples.sort_unstable();
    tuples.dedup();
    let mut last: Option<u128> = None;
    for &t in tuples.iter() {
        let prev = last
            .filter(|l| l >> 32 == t >> 32)
            .map(|l| unflip(l as u32));
        *visitors
            .entry(visitor_key(t >> 32, unflip(t as u32), prev))
            .or_default() += 1;
        last = Some(t);
    }
}

/// A cart as the state keeps it, with global ids.
fn cart_row<'a>(r: &UserRec, names: &'a Dictionaries) -> CartRow<'a> {
    CartRow {
        at: r.t,
        cents: r.cents,
        brand: names.brand_names.name(r.brand),
        category_code: names.code_names.name(r.cc),
    }
}

/// The first cart of each (product, UTC day, local day) of a user, sorted so.
fn first_carts<'a>(recs: &[UserRec], names: &'a Dictionaries) -> Vec<(i64, i32, i32, CartRow<'a>)> {
    let mut carts: Vec<(i64, i32, i32, CartRow<'a>)> = recs
        .iter()
        .filter(|r| r.kind == CART)
        .map(|r| (r.product, r.utc_day, r.day, cart_row(r, names)))
        .collect();
    carts.sort_unstable();
    carts.dedup_by(|b, a| (a.0, a.1, a.2) == (b.0, b.1, b.2));
    carts
}

/// A user's `mart_items` rows (from their carts and purchases), as
/// [`super::contrib::UserState::items`] makes them.
fn user_items(user: i64, recs: &[UserRec], names: &Dictionaries, items: &mut Vec<ItemRow>) {
    let carts = first_carts(recs, names);
    if carts.is_empty() {
        return;
    }
    let mut firsts: Vec<(i64, i32, CartRow<'_>)> = carts.iter().map(|c| (c.0, c.2, c.3)).collect();
    firsts.sort_unstable();
    firsts.dedup_by(|b, a| (a.0, a.1) == (b.0, b.1));
    let mut purchases: Vec<(i64, i64)> = recs
        .iter()
        .filter(|r| r.kind == PURCHASE)
        .map(|r| (r.product, r.t))
        .collect();
    purchases.sort_unstable();
    let mut last: Option<(i64, i32)> = None;
    for (product, day, cart) in firsts {
        let prev_day = last.filter(|(p, _)| *p == product).map(|(_, d)| d);
        let at = purchases.partition_point(|&(p, t)| (p, t) < (product, cart.at));
        let next_purchase = purchases
            .get(at)
            .filter(|(p, _)| *p == product)
            .map(|(_, t)| *t);
        items.push(ItemRow {
            day,
            user,
            product,
            cart: cart.to_cart(),
            prev_day,
            next_purchase,
        });
        last = Some((product, day));
    }
}

/// `mart_user_state` rows being built (its columns but the partitions).
#[derive(Default)]
struct StateRows {
    user: Int64Builder,
    gone: BooleanBuilder,
    kind: Int64Builder,
    utc_day: Int64Builder,
    day: Int64Builder,
    hour: Int64Builder,
    code: StringBuilder,
    events: Int64Builder,
    at: Int64Builder,
    product: Int64Builder,
    cents: Int64Builder,
    brand: StringBuilder,
    category_code: StringBuilder,
}

impl StateRows {
    /// One row's columns common to every kind.
    fn row(&mut self, user: i64, kind: i64, utc_day: i32, day: i32) {
        self.user.append_value(user);
        self.gone.append_null();
        self.kind.append_value(kind);
        self.utc_day.append_value(i64::from(utc_day));
        self.day.append_value(i64::from(day));
    }

    /// A user's rows: from their cells (sorted by UTC day, local day, hour and code) and
    /// their carts and purchases (`others`).
    fn user(&mut self, user: i64, cells: &[UserRec], others: &[UserRec], names: &Dictionaries) {
        for d in cells.chunk_by(|a, b| (a.utc_day, a.day) == (b.utc_day, b.day)) {
            self.row(user, DAY_ROW, d[0].utc_day, d[0].day);
            self.hour.append_null();
            self.code.append_null();
            self.events.append_value(d.iter().map(|r| r.events).sum());
            self.at.append_option(d.iter().map(|r| r.t).min());
            self.no_cart();
        }
        for c in cells.chunk_by(|a, b| {
            (a.utc_day, a.day, a.hour, a.code) == (b.utc_day, b.day, b.hour, b.code)
        }) {
            self.row(user, CELL_ROW, c[0].utc_day, c[0].day);
            self.hour.append_value(i64::from(c[0].hour));
            self.code
                .append_value(&names.categories[c[0].code as usize].1);
            self.events.append_value(c.iter().map(|r| r.events).sum());
            self.at.append_null();
            self.no_cart();
        }
        for (product, utc_day, day, cart) in first_carts(others, names) {
            self.row(user, CART_ROW, utc_day, day);
            self.hour.append_null();
            self.code.append_null();
            self.events.append_null();
            self.at.append_value(cart.at);
            self.product.append_value(product);
            self.cents.append_value(cart.cents);
            self.brand.append_option(cart.brand);
            self.category_code.append_option(cart.category_code);
        }
        for p in others.iter().filter(|r| r.kind == PURCHASE) {
            self.row(user, PURCHASE_ROW, p.utc_day, 0);
            self.hour.append_null();
            self.code.append_null();
            self.events.append_null();
            self.at.append_value(p.t);
            self.product.append_value(p.product);
            self.cents.append_null();
            self.brand.append_null();
            self.category_code.append_null();
        }
    }

    fn no_cart(&mut self) {
        self.product.append_null();
        self.cents.append_null();
        self.brand.append_null();
        self.category_code.append_null();
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let int = |b: &mut Int64Builder| -> ArrayRef { Arc::new(b.finish()) };
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("user_id", int(&mut self.user)),
            ("gone", Arc::new(self.gone.finish())),
            ("kind", int(&mut self.kind)),
            ("utc_day", int(&mut self.utc_day)),
            ("day", int(&mut self.day)),
            ("hour", int(&mut self.hour)),
            ("code", Arc::new(self.code.finish())),
            ("events", int(&mut self.events)),
            ("at", int(&mut self.at)),
            ("product_id", int(&mut self.product)),
            ("cents", int(&mut self.cents)),
            ("brand", Arc::new(self.brand.finish())),
            ("category_code", Arc::new(self.category_code.finish())),
        ];
        Ok(RecordBatch::try_from_iter(columns)?)
    }
}

/// Folds the session partitions in order, the next one folding on its thread while the one
/// before is written as part of run 1 (so at most two partitions' rows are held at once).
async fn sessions(
    lake: &Lake,
    zone: &str,
    files: &Files,
    parts: usize,
    totals: &mut Totals,
) -> Result<()> {
    let mut folded = futures::stream::iter(0..parts)
        .map(|p| {
            let files = files.of('s', p);
            fold_on_thread("sessions", p, move || fold_sessions(&files))
        })
        .buffered(2);
    let table = TableName::MartSessionState;
    let mut t = lake.ensure(table).await?;
    let mut first = true;
    let mut writing = std::time::Duration::ZERO;
    while let Some(out) = folded.next().await {
        let (rows, daily) =
            out.map_err(|e| Error::Argument(format!("a rebuild task failed: {e}")))??;
        if first || rows.num_rows() > 0 {
            let started = Instant::now();
            t = state::write(t, table, "user_session", zone, 1, &rows, first).await?;
            writing += started.elapsed();
            first = false;
        }
        totals.add_daily(daily);
    }
    tracing::debug!(
        zone,
        write_s = writing.as_secs_f64(),
        "sessions' state written"
    );
    Ok(())
}

/// A session part's key: (session id, user, UTC day, local day).
type PartKey = (u32, i64, i32, i32);

/// A session's part: one user's events on a local day that fell on a UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Part {
    events: i64,
    first: i64,
    carts: i64,
    purchases: i64,
}

impl Part {
    /// A part of one event.
    fn of(t: i64, kind: u8) -> Part {
        let mut part = Part {
            first: t,
            ..Part::default()
        };
        part.add(t, kind);
        part
    }

    fn add(&mut self, t: i64, kind: u8) {
        self.events += 1;
        self.first = self.first.min(t);
        self.carts += i64::from(kind == CART);
        self.purchases += i64::from(kind == PURCHASE);
    }

    fn merge(&mut self, other: &Part) {
        self.events += other.events;
        self.first = self.first.min(other.first);
        self.carts += other.carts;
        self.purchases += other.purchases;
    }
}

/// A session partition's parts, merged and in key order, with the sessions' texts.
struct SessionParts {
    /// The texts of the sessions that are no UUID, one after another.
    arena: Vec<u8>,
    /// Each session by session id (in text order).
    names: Vec<Name>,
    parts: Vec<(PartKey, Part)>,
}

/// A session of a partition: a UUID's bits, or its text's place in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Uuid(u128),
    Text(u32, u32),
}

/// A spilled part of a session kept as a UUID.
struct UuidPiece {
    bits: u128,
    key: (i64, i32, i32),
    part: Part,
}

/// A spilled part of a session kept as a text, with the text's place in the arena: the
/// text's first eight bytes decide nearly every comparison.
struct Piece {
    prefix: u64,
    at: u32,
    len: u32,
    key: (i64, i32, i32),
    part: Part,
}

impl SessionParts {
    /// The records of a partition's files, sorted by (session, user, UTC day, local day) and
    /// merged where equal: no map of sessions, and the rows come out in key order. Texts
    /// go to one arena.
    fn read(files: &[(PathBuf, usize)]) -> Result<SessionParts> {
        let mut arena: Vec<u8> = Vec::new();
        let mut uuids: Vec<UuidPiece> = Vec::new();
        let mut pieces: Vec<Piece> = Vec::new();
        let mut bytes = Vec::new();
        for (path, _) in files {
            let mut r = BufReader::with_capacity(1 << 16, File::open(path).map_err(io)?);
            while let Some(rec) = SessionRec::read(&mut r, &mut bytes).map_err(io)? {
                let key = (rec.user, rec.utc_day, rec.day);
                if let Some(bits) = uuid_bits(&bytes) {
                    uuids.push(UuidPiece {
                        bits,
                        key,
                        part: rec.part,
                    });
                    continue;
                }
                let mut head = [0u8; 8];
                let n = bytes.len().min(8);
                head[..n].copy_from_slice(&bytes[..n]);
                // Every text ends within 4 GiB, so its place and end fit a u32.
                u32::try_from(arena.len() + bytes.len())
                    .map_err(|_| Error::Argument("a session partition outgrew 4 GiB".into()))?;
                let at = arena.len() as u32;
                arena.extend_from_slice(&bytes);
                pieces.push(Piece {
                    prefix: u64::from_be_bytes(head),
                    at,
                    len: bytes.len() as u32,
                    key,
                    part: rec.part,
                });
            }
        }
        Ok(SessionParts::merged(arena, uuids, pieces))
    }

    fn merged(arena: Vec<u8>, mut uuids: Vec<UuidPiece>, mut pieces: Vec<Piece>) -> SessionParts {
        let text = |at: u32, len: u32| &arena[at as usize..(at + len) as usize];
        uuids.sort_unstable_by_key(|p| (p.bits, p.key));
        pieces.sort_unstable_by(|a, b| {
            a.prefix
                .cmp(&b.prefix)
                .then_with(|| text(a.at, a.len).cmp(text(b.at, b.len)))
                .then(a.key.cmp(&b.key))
        });
        // The two runs merged in text order (a text is never a UUID's).
        let mut uuids = uuids.into_iter().peekable();
        let mut pieces = pieces.into_iter().peekable();
        let mut names: Vec<Name> = Vec::new();
        let mut parts: Vec<(PartKey, Part)> = Vec::with_capacity(uuids.len() + pieces.len());
        loop {
            let text_first = match (uuids.peek(), pieces.peek()) {
                (Some(u), Some(p)) => *text(p.at, p.len) < uuid_text(u.bits)[..],
                (u, _) => u.is_none(),
            };
            let next = if text_first {
                pieces
                    .next()
                    .map(|p| (Name::Text(p.at, p.len), p.key, p.part))
            } else {
                uuids.next().map(|u| (Name::Uuid(u.bits), u.key, u.part))
            };
            let Some((name, key, part)) = next else { break };
            let same_name = match (names.last(), name) {
                (Some(Name::Uuid(a)), Name::Uuid(b)) => *a == b,
                (Some(Name::Text(a, n)), Name::Text(b, m)) => text(*a, *n) == text(b, m),
                _ => false,
            };
            if !same_name {
                names.push(name);
            }
            let id = (names.len() - 1) as u32;
            match parts.last_mut() {
                // The same session: the last part is this session's.
                Some(((_, u, ud, d), last)) if same_name && (*u, *ud, *d) == key => {
                    last.merge(&part)
                }
                _ => parts.push(((id, key.0, key.1, key.2), part)),
            }
        }
        SessionParts {
            arena,
            names,
            parts,
        }
    }

    /// Appends a session's text to `out`. The texts were a scan's (valid UTF-8); a damaged
    /// spill still gives a key.
    fn name_into(&self, id: u32, out: &mut Vec<u8>) {
        match self.names[id as usize] {
            Name::Uuid(bits) => out.extend_from_slice(&uuid_text(bits)),
            Name::Text(at, len) => {
                let bytes = &self.arena[at as usize..(at + len) as usize];
                out.extend_from_slice(String::from_utf8_lossy(bytes).as_bytes());
            }
        }
    }
}

/// Folds one session partition: its sessions' state rows and contributions to `mart_daily`.
fn fold_sessions(files: &[(PathBuf, usize)]) -> Result<(RecordBatch, BTreeMap<i32, Daily>)> {
    let sessions = SessionParts::read(files)?;
    let parts = &sessions.parts;
    let mut daily: BTreeMap<i32, Daily> = BTreeMap::new();
    // The keys' texts and their ends, made a column at the end (checked as UTF-8 once).
    let mut texts: Vec<u8> = Vec::with_capacity(parts.len() * 36);
    let mut ends: Vec<i32> = Vec::with_capacity(parts.len() + 1);
    ends.push(0);
    let mut name = Vec::new();
    let mut cols: [Int64Builder; 7] = Default::default();
    for session in parts.chunk_by(|a, b| a.0.0 == b.0.0) {
        session_daily(session, &mut daily);
        name.clear();
        sessions.name_into(session[0].0.0, &mut name);
        for ((_, user, utc_day, day), p) in session {
            texts.extend_from_slice(&name);
            ends.push(
                i32::try_from(texts.len()).map_err(|_| {
                    Error::Argument("a session partition's keys outgrew 2 GiB".into())
                })?,
            );
            let values = [
                *user,
                i64::from(*utc_day),
                i64::from(*day),
                p.events,
                p.first,
                p.carts,
                p.purchases,
            ];
            for (c, v) in cols.iter_mut().zip(values) {
                c.append_value(v);
            }
        }
    }
    let keys = StringArray::try_new(
        arrow::buffer::OffsetBuffer::new(ends.into()),
        texts.into(),
        None,
    )?;
    let n = parts.len();
    let names = state::SESSION_PART_COLUMNS;
    let mut columns: Vec<(&str, ArrayRef)> = vec![
        ("user_session", Arc::new(keys)),
        (
            "gone",
            Arc::new(arrow::array::BooleanArray::from(vec![None::<bool>; n])),
        ),
    ];
    for (name, mut c) in names.into_iter().zip(cols) {
        columns.push((name, Arc::new(c.finish())));
    }
    Ok((RecordBatch::try_from_iter(columns)?, daily))
}

/// A session's contribution to `mart_daily`, as [`super::contrib::SessionState`] makes it.
fn session_daily(parts: &[(PartKey, Part)], daily: &mut BTreeMap<i32, Daily>) {
    let mut days: Vec<i32> = parts.iter().map(|((_, _, _, d), _)| *d).collect();
    days.sort_unstable();
    days.dedup();
    for day in days {
        daily.entry(day).or_default().sessions += 1;
    }
    let Some(((_, _, _, start), _)) = parts.iter().min_by_key(|(_, p)| p.first) else {
        return;
    };
    let carts: i64 = parts.iter().map(|(_, p)| p.carts).sum();
    let purchases: i64 = parts.iter().map(|(_, p)| p.purchases).sum();
    let row = daily.entry(*start).or_default();
    row.session_starts += 1;
    if carts > 0 {
        row.cart_sessions += 1;
        if purchases == 0 {
            row.abandoned_sessions += 1;
        }
    }
}

/// `mart_items`' rows of a zone (weight 1 each), in the order given.
fn items_batch(zone: &str, items: &[ItemRow]) -> Result<RecordBatch> {
    let n = items.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![zone; n])),
        Arc::new(Date32Array::from_iter_values(items.iter().map(|r| r.day))),
        Arc::new(Int64Array::from_iter_values(items.iter().map(|r| r.user))),
        Arc::new(Int64Array::from_iter_values(
            items.iter().map(|r| r.product),
        )),
        Arc::new(Int64Array::from_iter_values(
            items.iter().map(|r| r.cart.at),
        )),
        Arc::new(Int64Array::from_iter_values(
            items.iter().map(|r| r.cart.cents),
        )),
        Arc::new(StringArray::from_iter(
            items.iter().map(|r| r.cart.brand.as_deref()),
        )),
        Arc::new(StringArray::from_iter(
            items.iter().map(|r| r.cart.category_code.as_deref()),
        )),
        Arc::new(Date32Array::from_iter(items.iter().map(|r| r.prev_day))),
        Arc::new(Int64Array::from_iter(items.iter().map(|r| r.next_purchase))),
        Arc::new(Int64Array::from(vec![1i64; n])),
    ];
    Ok(RecordBatch::try_new(
        TableName::MartItems.schema(),
        columns,
    )?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::marts::contrib::{EventFacts, Kind, SessionState, UserState};

    #[test]
    fn spills_of_processes_gone_are_swept_and_a_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        // No process has this id (Linux's pid_max is at most 2^22).
        let gone = tmp.path().join(format!("{SPILL_PREFIX}4000000000-x1"));
        let mine = tmp
            .path()
            .join(format!("{SPILL_PREFIX}{}-x2", std::process::id()));
        let other = tmp.path().join("shoplake-rebuild-notapid");
        for d in [&gone, &mine, &other] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("s0-0"), b"spill").unwrap();
        }
        sweep_spills(tmp.path());
        assert_eq!(!gone.exists(), cfg!(target_os = "linux"));
        assert!(mine.join("s0-0").exists());
        assert!(other.exists());
    }

    /// A small deterministic generator (xorshift).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    const CODES: [Option<&str>; 6] = [
        None,
        Some(""),
        Some("a"),
        Some("a.b"),
        Some("a.b.c"),
        Some("x.y"),
    ];
    const BRANDS: [Option<&str>; 3] = [None, Some("b1"), Some("b2")];
    /// Texts, canonical UUIDs (kept as bits), and texts a UUID's but for case or length.
    const SESSIONS: [&str; 9] = [
        "s1",
        "s2",
        "s10",
        "t",
        "",
        "0f0e0d0c-0b0a-4908-8706-050403020100",
        "ffffffff-ffff-4fff-bfff-ffffffffffff",
        "0F0E0D0C-0B0A-4908-8706-050403020100",
        "0f0e0d0c-0b0a-4908-8706-05040302010",
    ];

    /// Random events of a few users over a few days (some before 1970) with their
    /// sessions, spilled by one stream in windows of a few cells (and session parts) into two partitions of
    /// users and two of sessions; and the dictionaries.
    fn spilled(seed: u64, dir: &Path) -> (Vec<(UserRec, &'static str)>, Dictionaries) {
        let (events, _, names) = spilled_with(seed, dir);
        (events, names)
    }

    /// [`spilled`], with the stream's spill.
    fn spilled_with(
        seed: u64,
        dir: &Path,
    ) -> (Vec<(UserRec, &'static str)>, Vec<Spill>, Dictionaries) {
        let mut rng = Rng(seed);
        let bounds = Arc::new(Bounds {
            users: vec![2],
            sessions: vec!["s2".to_owned()],
        });
        let mut spill = Spill::new(dir, 0, &bounds, Tz::UTC);
        let base = Sizes {
            cells: 3,
            sessions: 2,
            sums: 2,
        };
        spill.sweep = Sweep::new(base, 7, 5);
        let mut events = Vec::new();
        for _ in 0..3000 {
            let day = rng.below(6) as i32 - 2;
            let rec = UserRec {
                user: rng.below(12) as i64 - 3,
                t: i64::from(day) * 86_400_000_000 + rng.below(86_400) as i64 * 1_000_000,
                product: rng.below(4) as i64,
                cents: rng.below(3) as i64 * 100,
                events: 1,
                utc_day: day - rng.below(2) as i32,
                day,
                cc: spill.codes.id(CODES[rng.below(6) as usize]),
                brand: spill.brands.id(BRANDS[rng.below(3) as usize]),
                hour: rng.below(24) as u8,
                kind: [OTHER, VIEW, CART, PURCHASE][rng.below(4) as usize],
                code: 0,
            };
            let session = SESSIONS[rng.below(SESSIONS.len() as u64) as usize];
            spill.event(&rec, Some(session)).unwrap();
            events.push((rec, session));
        }
        let spills = vec![spill.flushed().unwrap()];
        let names = Dictionaries::merge(&spills);
        (events, spills, names)
    }

    #[test]
    fn brand_and_category_sums_swept_out_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (events, spills, names) = spilled_with(5, dir.path());
        assert!(!spills[0].brands_done.is_empty() && !spills[0].categories_done.is_empty());
        let total = |b: &RecordBatch, column: &str| -> BTreeMap<i32, i64> {
            let c = Columns::new(b);
            let days = b
                .column_by_name("day")
                .unwrap()
                .as_any()
                .downcast_ref::<Date32Array>()
                .unwrap()
                .clone();
            let n = c.int64_array(column).unwrap();
            let mut out = BTreeMap::new();
            for i in 0..b.num_rows() {
                *out.entry(days.value(i)).or_default() += n.value(i);
            }
            out
        };
        let mut branded: BTreeMap<i32, i64> = BTreeMap::new();
        let mut all: BTreeMap<i32, i64> = BTreeMap::new();
        for (r, _) in &events {
            if names.brands[0][r.brand as usize] != 0 {
                *branded.entry(r.day).or_default() += 1;
            }
            *all.entry(r.day).or_default() += 1;
        }
        let brands = brands_batch("UTC", &spills, &names).unwrap();
        assert_eq!(total(&brands, "events"), branded);
        let categories = categories_batch("UTC", &spills, &names).unwrap();
        let levels = Columns::new(&categories)
            .int64_array("level")
            .unwrap()
            .clone();
        let top = arrow::compute::filter_record_batch(
            &categories,
            &arrow::compute::kernels::cmp::eq(&levels, &Int64Array::new_scalar(0)).unwrap(),
        )
        .unwrap();
        assert_eq!(total(&top, "events"), all);
    }

    fn facts<'a>(r: &UserRec, names: &'a Dictionaries) -> EventFacts<'a> {
        let category_code = names.code_names.name(r.cc);
        EventFacts {
            user: r.user,
            product: r.product,
            kind: match r.kind {
                CART => Kind::Cart,
                PURCHASE => Kind::Purchase,
                _ => Kind::Other,
            },
            at: r.t,
            utc_day: r.utc_day,
            day: r.day,
            hour: r.hour,
            code: category_at(category_code, 0),
            category_code,
            brand: names.brand_names.name(r.brand),
            cents: r.cents,
        }
    }

    #[test]
    fn the_whole_fold_contributes_as_the_users_states_do() {
        for seed in [1, 7, 42] {
            let dir = tempfile::tempdir().unwrap();
            let (events, names) = spilled(seed, dir.path());
            let mut states: BTreeMap<i64, UserState> = BTreeMap::new();
            for (r, _) in &events {
                states.entry(r.user).or_default().add(&facts(r, &names));
            }
            let mut want = Sums::default();
            let mut want_items = Vec::new();
            for (u, s) in &states {
                s.contribute(1, &mut want);
                want_items.extend(s.items(*u));
            }
            let files = Files {
                dir: dir.path().to_owned(),
                streams: 1,
            };
            let mut totals = Totals::default();
            let mut rows = 0;
            for part in 0..2 {
                let out = fold_users(&files.of('u', part), &names).unwrap();
                let users = out
                    .rows
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                assert!(users.values().is_sorted(), "sorted by user");
                assert!(users.values().iter().all(|u| (*u >= 2) == (part == 1)));
                rows += out.rows.num_rows();
                totals.add_daily(out.daily);
                for (k, n) in out.visitors {
                    *totals.visitors.entry(k).or_default() += n;
                }
                totals.items.extend(out.items);
            }
            assert_eq!(
                totals.visitor_sums(&names).visitors,
                want.visitors,
                "seed {seed}"
            );
            assert_eq!(totals.daily, want.daily, "seed {seed}");
            let key = |r: &ItemRow| (r.user, r.product, r.day);
            totals.items.sort_unstable_by_key(key);
            want_items.sort_unstable_by_key(key);
            assert_eq!(totals.items, want_items, "seed {seed}");
            // The state's rows: one per user-day, cell, first cart and purchase.
            let want_rows: usize = states
                .values()
                .map(|s| s.days.len() + s.cells.len() + s.carts.len() + s.purchases.len())
                .sum();
            assert_eq!(rows, want_rows, "seed {seed}");
        }
    }

    #[test]
    fn the_whole_fold_counts_sessions_as_their_states_do() {
        let dir = tempfile::tempdir().unwrap();
        let (events, names) = spilled(3, dir.path());
        let mut states: BTreeMap<&str, SessionState> = BTreeMap::new();
        for (r, s) in &events {
            states.entry(s).or_default().add(&facts(r, &names));
        }
        let mut want = Sums::default();
        for s in states.values() {
            s.contribute(1, &mut want);
        }
        let files = Files {
            dir: dir.path().to_owned(),
            streams: 1,
        };
        let mut daily = Totals::default();
        let mut keys: Vec<String> = Vec::new();
        let mut rows = 0;
        for part in 0..2 {
            let (batch, d) = fold_sessions(&files.of('s', part)).unwrap();
            daily.add_daily(d);
            rows += batch.num_rows();
            let column = batch
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            let part_keys: Vec<&str> = column.iter().flatten().collect();
            assert!(part_keys.is_sorted(), "sorted by session");
            assert!(part_keys.iter().all(|k| (*k >= "s2") == (part == 1)));
            keys.extend(part_keys.into_iter().map(str::to_owned));
        }
        assert_eq!(daily.daily, want.daily);
        let parts: usize = states.values().map(|s| s.parts.len()).sum();
        assert_eq!(rows, parts);
        let distinct: BTreeSet<String> = keys.into_iter().collect();
        assert_eq!(distinct.len(), states.len());
    }

    #[test]
    fn spilled_records_read_back_as_written() {
        let cell = UserRec {
            user: -7,
            t: 1_570_000_000_000_000,
            events: 12,
            utc_day: 18_000,
            day: 17_999,
            cc: 3,
            hour: 23,
            kind: CELL,
            ..UserRec::default()
        };
        let cart = UserRec {
            product: 1_004_856,
            cents: 12_345,
            brand: 9,
            events: 1,
            kind: CART,
            ..cell
        };
        let mut bytes = Vec::new();
        for r in [cell, cart, cell] {
            r.write(&mut bytes).unwrap();
        }
        // A cell leaves out the product, price and brand it does not have.
        assert_eq!(bytes.len(), 2 * CELL_REC + USER_REC);
        let mut back = Vec::new();
        let mut at = 0;
        while let Some((r, len)) = UserRec::read(&bytes[at..]) {
            back.push(r);
            at += len;
        }
        assert_eq!(back, [cell, cart, cell]);
        // A file cut inside a record is no record.
        assert_eq!(
            UserRec::read(&bytes[..CELL_REC + 5]).map(|(r, _)| r),
            Some(cell)
        );
        assert_eq!(UserRec::read(&bytes[CELL_REC..CELL_REC + 5]), None);
    }

    #[test]
    fn uuid_sessions_keep_their_text_and_its_order() {
        let texts = [
            "00000000-0000-0000-0000-000000000000",
            "0f0e0d0c-0b0a-4908-8706-050403020100",
            "72d76fde-8bb3-4e00-8c23-a032dfed738c",
            "9fffffff-ffff-ffff-ffff-ffffffffffff",
            "a0000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
        ];
        let bits: Vec<u128> = texts
            .iter()
            .map(|t| uuid_bits(t.as_bytes()).unwrap())
            .collect();
        for (t, b) in texts.iter().zip(&bits) {
            assert_eq!(&uuid_text(*b)[..], t.as_bytes());
        }
        assert!(
            texts.is_sorted() && bits.is_sorted(),
            "the bits order as the texts"
        );
        assert_eq!(bits[2], 0x72d76fde_8bb3_4e00_8c23_a032dfed738c);
        for other in [
            "",
            "0F0E0D0C-0B0A-4908-8706-050403020100",
            "0f0e0d0c0b0a-4908-8706-050403020100-",
            "0f0e0d0c-0b0a-4908-8706-05040302010g",
            "0f0e0d0c-0b0a-4908-8706-0504030201000",
            "0f0e0d0c-0b0a-4908-8706-05040302010",
        ] {
            assert_eq!(uuid_bits(other.as_bytes()), None, "{other:?}");
        }
    }

    #[test]
    fn partitions_are_ordered_ranges() {
        let bounds = Bounds {
            users: cuts(&(0..100).collect::<Vec<i64>>(), 4),
            sessions: cuts(&["a", "b", "b", "b", "c"].map(String::from), 3),
        };
        assert_eq!(bounds.users, vec![25, 50, 75]);
        assert_eq!(
            [i64::MIN, 24, 25, 99, i64::MAX].map(|u| bounds.user_part(u)),
            [0, 0, 1, 3, 3]
        );
        assert_eq!(bounds.sessions, vec!["b".to_owned()]);
        assert_eq!(
            ["", "a", "b", "zz"].map(|s| bounds.session_part(s)),
            [0, 0, 1, 1]
        );
    }
}
