//! Query results as people and programs read them: an aligned table, JSON lines (one object
//! per row), or CSV.

use arrow::array::RecordBatch;

use crate::error::StoreError;

/// An aligned text table.
pub fn table(batches: &[RecordBatch]) -> Result<String, StoreError> {
    Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string())
}

/// One JSON object per row, one per line.
pub fn json_lines(batches: &[RecordBatch]) -> Result<Vec<u8>, StoreError> {
    let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    Ok(writer.into_inner())
}

/// One JSON object per row, for APIs and reports that embed rows in a larger document.
pub fn json_rows(batches: &[RecordBatch]) -> Result<Vec<serde_json::Value>, StoreError> {
    json_lines(batches)?
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).map_err(|e| StoreError::Query(e.to_string())))
        .collect()
}

/// CSV with a header row.
pub fn csv(batches: &[RecordBatch]) -> Result<Vec<u8>, StoreError> {
    let mut writer = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(Vec::new());
    for batch in batches {
        writer.write(batch)?;
    }
    Ok(writer.into_inner())
}
