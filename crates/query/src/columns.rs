//! Typed access to the columns of a query's result, by name.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};

use crate::error::Result;

/// Typed access to a result column by name, cast to one type.
pub struct Columns<'a> {
    batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    /// Reads a batch's columns.
    pub fn new(batch: &'a RecordBatch) -> Columns<'a> {
        Columns { batch }
    }

    fn cast(&self, name: &str, to: &DataType) -> Result<ArrayRef> {
        let column = self.batch.column_by_name(name).ok_or_else(|| {
            crate::Error::from(deltalake::datafusion::error::DataFusionError::Internal(
                format!("report query lacks column {name}"),
            ))
        })?;
        Ok(arrow::compute::cast(column, to)?)
    }

    /// A column as `i64`s.
    pub fn i64(&self, name: &str) -> Result<Vec<Option<i64>>> {
        let a = self.cast(name, &DataType::Int64)?;
        Ok(a.as_primitive::<Int64Type>().iter().collect())
    }

    /// A column as an `Int64Array` (no copy when it is one already).
    pub fn int64_array(&self, name: &str) -> Result<arrow::array::Int64Array> {
        Ok(self
            .cast(name, &DataType::Int64)?
            .as_primitive::<Int64Type>()
            .clone())
    }

    /// A money column (decimal with two places, as `events.price` is stored) as integer cents:
    /// the decimal's own integer, without arithmetic per value.
    pub fn cents(&self, name: &str) -> Result<arrow::array::Int64Array> {
        let a = match self.batch.column_by_name(name) {
            Some(c) if matches!(c.data_type(), DataType::Decimal128(_, 2)) => c.clone(),
            _ => self.cast(name, &DataType::Decimal128(38, 2))?,
        };
        let d = a.as_primitive::<arrow::datatypes::Decimal128Type>();
        Ok(d.unary(|v| v as i64))
    }

    /// A column as a `StringViewArray` (no copy when it is one already).
    pub fn string_view_array(&self, name: &str) -> Result<arrow::array::StringViewArray> {
        Ok(self
            .cast(name, &DataType::Utf8View)?
            .as_string_view()
            .clone())
    }

    /// A column as strings.
    pub fn str(&self, name: &str) -> Result<Vec<Option<String>>> {
        let a = self.cast(name, &DataType::Utf8)?;
        let a = a.as_string::<i32>();
        Ok((0..a.len())
            .map(|i| a.is_valid(i).then(|| a.value(i).to_owned()))
            .collect())
    }
}
