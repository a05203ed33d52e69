//! The real REES46 sample: every row valid, and written back byte for byte.

use std::path::PathBuf;
use std::sync::Arc;

use shoplake_events::{CsvDecoder, CsvEncoder, FixedClock, Row, Validator};

fn sample_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/rees46-2019-Oct-sample.csv")
}

#[test]
fn real_sample_decodes_without_rejects_and_round_trips() {
    let path = sample_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v = Validator::new(Arc::new(FixedClock(1_795_824_000_000_000)));
    let input = shoplake_events::io::open(&path).unwrap();
    let rows: Vec<Row> = CsvDecoder::new(input, v)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 1000);
    let mut enc = CsvEncoder::new(Vec::new(), false).unwrap();
    for row in &rows {
        match row {
            Row::Event(e) => enc.write(e).unwrap(),
            Row::Reject(r) => panic!("{r}"),
        }
    }
    let written = String::from_utf8(enc.finish().unwrap()).unwrap();
    assert_eq!(written, text.replace("\r\n", "\n"));
}
