//! Keyed state tables: the newest run naming a key gives its rows, a gone key none, and a
//! read decodes only the pages that can hold the keys asked for.

use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use deltalake::DeltaTable;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use shoplake_lake::keyed::{Keys, PAGE_ROWS, Replacing, read_keys, write_run};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("zone", DataType::Utf8, false),
        Field::new("run", DataType::Int64, false),
        Field::new("user_id", DataType::Int64, false),
        Field::new("gone", DataType::Boolean, false),
        Field::new("n", DataType::Int64, true),
    ]))
}

/// A keyed table of this schema, partitioned by zone and run, in a new directory.
async fn table(dir: &std::path::Path, schema: SchemaRef) -> DeltaTable {
    let url = url::Url::from_directory_path(dir.join("state")).unwrap();
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let kernel: StructType = schema.as_ref().try_into_kernel().unwrap();
    deltalake::DeltaTableBuilder::from_url(url)
        .unwrap()
        .build()
        .unwrap()
        .create()
        .with_columns(kernel.fields().cloned())
        .with_partition_columns(["zone", "run"])
        .await
        .unwrap()
}

fn run(zone: &str, run: i64, rows: &[(i64, bool, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(vec![zone; rows.len()])),
            Arc::new(Int64Array::from(vec![run; rows.len()])),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.1)))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

fn pairs(batches: &[RecordBatch]) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = batches
        .iter()
        .flat_map(|b| {
            let u = b.column(0).as_primitive::<Int64Type>().clone();
            let n = b.column(1).as_primitive::<Int64Type>().clone();
            (0..b.num_rows()).map(move |i| (u.value(i), n.value(i)))
        })
        .collect();
    out.sort_unstable();
    out
}

/// The first column's texts.
fn texts(batches: &[RecordBatch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let s = b.column(0).as_string::<i32>().clone();
            (0..s.len()).map(move |i| s.value(i).to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_run_of_a_key_wins_and_reads_touch_few_pages() {
    let dir = tempfile::tempdir().unwrap();
    let t = table(dir.path(), schema()).await;
    // Run 1: 200,000 users, out of order, two rows for user 7; the same users in another zone.
    let mut base: Vec<(i64, bool, i64)> = (0..200_000i64)
        .map(|u| ((u * 7_919) % 200_000, false, (u * 7_919) % 200_000))
        .collect();
    base.push((7, false, 70));
    let t = write_run(t, "user_id", run("UTC", 1, &base), Replacing::Nothing)
        .await
        .unwrap();
    let t = write_run(
        t,
        "user_id",
        run("Asia/Tokyo", 1, &base[..10]),
        Replacing::Nothing,
    )
    .await
    .unwrap();
    // Run 2 rewrites users 10 and 199,999 and says user 20 has no rows left.
    let t = write_run(
        t,
        "user_id",
        run(
            "UTC",
            2,
            &[(199_999, false, -1), (10, false, -1), (20, true, 0)],
        ),
        Replacing::Nothing,
    )
    .await
    .unwrap();

    let keys = Keys::ints(vec![10, 20, 30, 7, 199_999, 500_000]);
    let got = read_keys(&t, "UTC", "user_id", &keys, &["user_id", "n"])
        .await
        .unwrap();
    assert_eq!(
        pairs(&got.batches),
        vec![(7, 7), (7, 70), (10, -1), (30, 30), (199_999, -1)]
    );
    // Run 2's one page and, in run 1, the pages of 7, 20, 30 (one page) and 199,999 (the
    // last); 10 and 20 were found in run 2.
    assert!(
        got.rows_decoded <= 3 + 2 * PAGE_ROWS,
        "decoded {} rows",
        got.rows_decoded
    );
    let other = read_keys(&t, "Asia/Tokyo", "user_id", &keys, &["user_id", "n"])
        .await
        .unwrap();
    let want: Vec<(i64, i64)> = base[..10]
        .iter()
        .filter(|r| [10, 20, 30, 7, 199_999].contains(&r.0))
        .map(|r| (r.0, r.2))
        .collect();
    assert_eq!(pairs(&other.batches), want);
    let none = read_keys(&t, "UTC", "user_id", &Keys::ints(vec![]), &["n"])
        .await
        .unwrap();
    assert!(none.batches.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_keys_are_found_by_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("zone", DataType::Utf8, false),
        Field::new("run", DataType::Int64, false),
        Field::new("session", DataType::Utf8, false),
        Field::new("gone", DataType::Boolean, false),
    ]));
    let t = table(dir.path(), schema.clone()).await;
    let sessions: Vec<String> = (0..50_000i64)
        .map(|i| format!("{:08x}-session", i * 48_271 % 50_000))
        .collect();
    let n = sessions.len();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["UTC"; n])),
            Arc::new(Int64Array::from(vec![1; n])),
            Arc::new(StringArray::from(sessions.clone())),
            Arc::new(BooleanArray::from(vec![false; n])),
        ],
    )
    .unwrap();
    let t = write_run(t, "session", batch, Replacing::Nothing)
        .await
        .unwrap();
    let want = vec![format!("{:08x}-session", 12_345), "ü-not-there".to_owned()];
    let got = read_keys(&t, "UTC", "session", &Keys::texts(want), &["session"])
        .await
        .unwrap();
    let found = texts(&got.batches);
    assert_eq!(found, vec![format!("{:08x}-session", 12_345)]);
    assert!(got.rows_decoded <= 2 * PAGE_ROWS, "{}", got.rows_decoded);
}

/// Keys never written fall within some page's bounds almost always (a new session id between
/// two stored ones); each row group's Bloom filter rules them out, so asking for 500 new keys
/// beside 5 stored ones decodes about the 5 keys' pages, not 500 pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_written_read_no_pages() {
    let dir = tempfile::tempdir().unwrap();
    let t = table(dir.path(), schema()).await;
    // Even user ids only; the keys asked for are odd (new), but for five even ones.
    let base: Vec<(i64, bool, i64)> = (0..400_000i64).map(|u| (2 * u, false, u)).collect();
    let t = write_run(t, "user_id", run("UTC", 1, &base), Replacing::Nothing)
        .await
        .unwrap();
    let mut asked: Vec<i64> = (0..500i64).map(|i| 1 + 2 * (i * 1_597 % 400_000)).collect();
    asked.extend([0, 2_000, 200_000, 400_000, 799_998]);
    let got = read_keys(&t, "UTC", "user_id", &Keys::ints(asked), &["user_id", "n"])
        .await
        .unwrap();
    assert_eq!(
        pairs(&got.batches),
        vec![
            (0, 0),
            (2_000, 1_000),
            (200_000, 100_000),
            (400_000, 200_000),
            (799_998, 399_999)
        ]
    );
    // Five pages, and a few false positives at 1 %.
    assert!(
        got.rows_decoded <= 15 * PAGE_ROWS,
        "decoded {} rows ({} pages)",
        got.rows_decoded,
        got.rows_decoded / PAGE_ROWS
    );

    // Text keys (session ids) the same way.
    let schema = Arc::new(Schema::new(vec![
        Field::new("zone", DataType::Utf8, false),
        Field::new("run", DataType::Int64, false),
        Field::new("session", DataType::Utf8, false),
        Field::new("gone", DataType::Boolean, false),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let t = table(dir.path(), schema.clone()).await;
    let stored: Vec<String> = (0..200_000i64).map(|i| format!("s{:09}", 2 * i)).collect();
    let n = stored.len();
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["UTC"; n])),
            Arc::new(Int64Array::from(vec![1; n])),
            Arc::new(StringArray::from(stored)),
            Arc::new(BooleanArray::from(vec![false; n])),
        ],
    )
    .unwrap();
    let t = write_run(t, "session", batch, Replacing::Nothing)
        .await
        .unwrap();
    let mut asked: Vec<String> = (0..500i64)
        .map(|i| format!("s{:09}", 1 + 2 * (i * 1_597 % 200_000)))
        .collect();
    asked.push(format!("s{:09}", 123_456));
    let got = read_keys(&t, "UTC", "session", &Keys::texts(asked), &["session"])
        .await
        .unwrap();
    let found = texts(&got.batches);
    assert_eq!(found, vec![format!("s{:09}", 123_456)]);
    assert!(
        got.rows_decoded <= 10 * PAGE_ROWS,
        "decoded {} rows ({} pages)",
        got.rows_decoded,
        got.rows_decoded / PAGE_ROWS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_runs_read_as_the_runs_did() {
    let dir = tempfile::tempdir().unwrap();
    let t = table(dir.path(), schema()).await;
    let base: Vec<(i64, bool, i64)> = (0..1_000i64).map(|u| (u, false, u)).collect();
    let t = write_run(t, "user_id", run("UTC", 1, &base), Replacing::Nothing)
        .await
        .unwrap();
    // Run 2 changes users 1 and 2 and drops 3; run 3 changes 2 again and brings back 3.
    let r2 = [(1, false, 10), (1, false, 11), (2, false, 20), (3, true, 0)];
    let t = write_run(t, "user_id", run("UTC", 2, &r2), Replacing::Nothing)
        .await
        .unwrap();
    let r3 = [(2, false, 200), (4, true, 0), (3, false, 300)];
    let mut t = write_run(t, "user_id", run("UTC", 3, &r3), Replacing::Nothing)
        .await
        .unwrap();
    let keys = Keys::ints(vec![0, 1, 2, 3, 4, 5]);
    let before = read_keys(&t, "UTC", "user_id", &keys, &["user_id", "n"])
        .await
        .unwrap();
    let want = vec![(0, 0), (1, 10), (1, 11), (2, 200), (3, 300), (5, 5)];
    assert_eq!(pairs(&before.batches), want);
    // The newer runs merged into run 3 (gone markers kept: run 1 still holds user 4).
    t = shoplake_lake::keyed::merge_runs(t, &schema(), "UTC", "user_id", &[2, 3], false)
        .await
        .unwrap();
    let runs = shoplake_lake::keyed::runs(&t, "UTC").unwrap();
    assert_eq!(runs.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
    let after = read_keys(&t, "UTC", "user_id", &keys, &["user_id", "n"])
        .await
        .unwrap();
    assert_eq!(pairs(&after.batches), want);
    // Everything merged: gone keys leave no row at all.
    t = shoplake_lake::keyed::merge_runs(t, &schema(), "UTC", "user_id", &[1, 3], true)
        .await
        .unwrap();
    assert_eq!(
        shoplake_lake::keyed::runs(&t, "UTC").unwrap().len(),
        1,
        "one run left"
    );
    let all = read_keys(&t, "UTC", "user_id", &keys, &["user_id", "n"])
        .await
        .unwrap();
    assert_eq!(pairs(&all.batches), want);
}

/// The rows of a zone as a fresh load of the table from its log reads them.
async fn reloaded(dir: &std::path::Path, zone: &str, keys: &Keys) -> Vec<(i64, i64)> {
    let url = url::Url::from_directory_path(dir.join("state")).unwrap();
    let t = deltalake::open_table(url).await.unwrap();
    let rows = read_keys(&t, zone, "user_id", keys, &["user_id", "n"])
        .await
        .unwrap();
    pairs(&rows.batches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_replaces_its_zone_or_runs_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let t = table(dir.path(), schema()).await;
    let base: Vec<(i64, bool, i64)> = (0..100i64).map(|u| (u, false, u)).collect();
    let t = write_run(t, "user_id", run("UTC", 1, &base), Replacing::Nothing)
        .await
        .unwrap();
    let t = write_run(
        t,
        "user_id",
        run("UTC", 2, &[(5, false, 50)]),
        Replacing::Nothing,
    )
    .await
    .unwrap();
    let t = write_run(
        t,
        "user_id",
        run("Asia/Tokyo", 1, &base),
        Replacing::Nothing,
    )
    .await
    .unwrap();
    let keys = Keys::ints(vec![1, 5, 7]);
    // A zone's replacement removes all its runs, in one commit with the new run.
    let version = t.version();
    let t = write_run(
        t,
        "user_id",
        run("UTC", 1, &[(7, false, 70)]),
        Replacing::Zone("UTC"),
    )
    .await
    .unwrap();
    assert_eq!(t.version(), version.map(|v| v + 1));
    assert_eq!(shoplake_lake::keyed::runs(&t, "UTC").unwrap().len(), 1);
    let utc = read_keys(&t, "UTC", "user_id", &keys, &["user_id", "n"])
        .await
        .unwrap();
    assert_eq!(pairs(&utc.batches), vec![(7, 70)]);
    assert_eq!(reloaded(dir.path(), "UTC", &keys).await, vec![(7, 70)]);
    assert_eq!(
        reloaded(dir.path(), "Asia/Tokyo", &keys).await,
        vec![(1, 1), (5, 5), (7, 7)],
        "another zone is left alone"
    );
    // A run of one zone cannot stand in for another's.
    let wrong = write_run(
        t.clone(),
        "user_id",
        run("UTC", 1, &[(7, false, 70)]),
        Replacing::Zone("Asia/Tokyo"),
    )
    .await;
    assert!(wrong.is_err(), "{wrong:?}");
    // A replacement without rows only removes; an append without rows commits nothing.
    let t = write_run(
        t,
        "user_id",
        run("Asia/Tokyo", 1, &[]),
        Replacing::Zone("Asia/Tokyo"),
    )
    .await
    .unwrap();
    assert!(reloaded(dir.path(), "Asia/Tokyo", &keys).await.is_empty());
    let version = t.version();
    let t = write_run(t, "user_id", run("UTC", 3, &[]), Replacing::Nothing)
        .await
        .unwrap();
    assert_eq!(t.version(), version);
    // Merging runs whose keys are all gone leaves the zone without rows.
    let t = write_run(
        t,
        "user_id",
        run("UTC", 2, &[(7, true, 0)]),
        Replacing::Nothing,
    )
    .await
    .unwrap();
    let t = shoplake_lake::keyed::merge_runs(t, &schema(), "UTC", "user_id", &[1, 2], true)
        .await
        .unwrap();
    assert!(shoplake_lake::keyed::runs(&t, "UTC").unwrap().is_empty());
    assert!(reloaded(dir.path(), "UTC", &keys).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_columns_are_delta_encoded_without_a_dictionary() {
    use deltalake::parquet::basic::Encoding;
    use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};

    let dir = tempfile::tempdir().unwrap();
    let t = table(dir.path(), schema()).await;
    let rows: Vec<(i64, bool, i64)> = (0..50_000i64).map(|u| (u * 3, u % 5 == 0, u % 7)).collect();
    let t = write_run(t, "user_id", run("UTC", 1, &rows), Replacing::Nothing)
        .await
        .unwrap();
    let uris: Vec<String> = t.get_file_uris().unwrap().collect();
    assert_eq!(uris.len(), 1, "one file per run: {uris:?}");
    let path = match url::Url::parse(&uris[0]) {
        Ok(url) => url.to_file_path().unwrap(),
        Err(_) => std::path::PathBuf::from(&uris[0]),
    };
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let meta = reader.metadata();
    assert!(meta.num_row_groups() > 0);
    for group in meta.row_groups() {
        for column in group.columns() {
            let name = column.column_path().string();
            if name == "user_id" || name == "n" {
                assert!(
                    column.dictionary_page_offset().is_none(),
                    "{name} has a dictionary"
                );
                let encodings: Vec<Encoding> = column.encodings().collect();
                assert!(
                    encodings.contains(&Encoding::DELTA_BINARY_PACKED),
                    "{name} is encoded as {encodings:?}"
                );
            }
        }
    }
    // And it reads back as written (user 0 is marked gone, 4 was never written).
    let keys = Keys::ints(vec![0, 3, 149_997, 4]);
    let got = read_keys(&t, "UTC", "user_id", &keys, &["user_id", "n"])
        .await
        .unwrap();
    assert_eq!(pairs(&got.batches), vec![(3, 1), (149_997, 49_999 % 7)]);
}
