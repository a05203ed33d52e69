//! Golden cases: `tests/golden/<case>/events.jsonl` in (optional `detect.toml` beside it),
//! `incidents.jsonl` out (every change, in order). `SHOPLAKE_BLESS=1` rewrites the expected
//! files from the actual output (then review the diff).
