//! The shoplake event model, shared by every path: import, collector, replay, detector, lake.
//!
//! - [`Event`]: the nine REES46 fields, exact prices ([`Price`], integer cents), optional
//!   network fields, and a stable [`EventId`] (a hash of the nine fields).
//! - Codecs: [`CsvDecoder`]/[`CsvEncoder`] for the REES46 CSV format (`.csv` and `.csv.gz`),
//!   [`JsonDecoder`]/[`JsonEncoder`] for JSON objects, arrays and NDJSON.
//! - [`Validator`]: the cleaning and validation rules; every refused row becomes a [`Reject`]
//!   with its line, field, reason and raw text.
//! - [`record`]: the event as a record of the event log (compact binary, or JSON).
//! - [`arrow`]: the Arrow schema and `RecordBatch` conversion.

pub mod arrow;
pub mod csv;
pub mod decode;
mod error;
pub mod event;
pub mod io;
pub mod json;
pub mod record;
pub mod settings;
pub mod time;
pub mod validate;

pub use crate::csv::{CsvDecoder, CsvEncoder, Row, RowRef};
pub use crate::decode::{Decoder, Format};
pub use crate::error::{Error, Result};
pub use crate::event::{Event, EventId, EventRef, EventType, Price};
pub use crate::json::{JsonDecoder, JsonEncoder};
pub use crate::time::{Clock, FixedClock, SystemClock};
pub use crate::validate::{Field, FieldError, RawEvent, Reject, Validator};
