//! Replies written as the client reads them: a `SELECT`'s rows, or the items of a long
//! listing (`CHANNELS`, `CLIENTS`, `HISTORY`), a chunk at a time whenever the
//! connection's output has room, so a reply nobody reads holds no more than one chunk.

use serde_json::Value;

use crate::commands::tables::select::RowStream;
use crate::protocol::reply::{ListEncoder, RowsEncoder};
use crate::protocol::{ErrorReply, Format, Item, Reply};

/// Listing items encoded per chunk.
const ITEMS_PER_CHUNK: usize = 256;

/// A listing at least this long is streamed; a shorter one is written at once.
pub const STREAM_ITEMS_FROM: usize = ITEMS_PER_CHUNK;

/// A reply being written.
pub struct Streaming {
    source: Source,
    format: Format,
    id: Option<Value>,
    /// Where the reply starts in the output (for a JSON reply over WebSocket, which is
    /// one frame and so must be whole before it is sent).
    start: usize,
}

enum Source {
    Rows {
        rows: RowStream,
        enc: RowsEncoder,
    },
    Items {
        items: std::vec::IntoIter<Item>,
        enc: ListEncoder,
    },
}

/// What one chunk did.
pub enum Step {
    /// More to come.
    More,
    /// The reply is complete in the output.
    Done,
}

impl Streaming {
    /// Starts a `SELECT` reply, writing its head into `out`.
    pub fn rows(rows: RowStream, format: Format, id: Option<Value>, out: &mut Vec<u8>) -> Self {
        let start = out.len();
        let enc = RowsEncoder::start(format, id.as_ref(), rows.columns().clone(), out);
        Streaming {
            source: Source::Rows { rows, enc },
            format,
            id,
            start,
        }
    }

    /// Starts a listing reply, writing its head into `out`.
    pub fn items(
        key: &'static str,
        items: Vec<Item>,
        format: Format,
        id: Option<Value>,
        out: &mut Vec<u8>,
    ) -> Self {
        let start = out.len();
        let enc = ListEncoder::start(format, id.as_ref(), key, items.len(), out);
        Streaming {
            source: Source::Items {
                items: items.into_iter(),
                enc,
            },
            format,
            id,
            start,
        }
    }

    /// Writes the next chunk into `out`. A JSON reply that would grow past
    /// `line_limit` is replaced by a `too_large` error.
    pub fn step(
        mut self: Box<Self>,
        out: &mut Vec<u8>,
        line_limit: Option<usize>,
    ) -> (Step, Option<Box<Self>>) {
        let done = match &mut self.source {
            Source::Rows { rows, enc } => rows.next_rows(|row| enc.row(row, out)),
            Source::Items { items, enc } => {
                for item in items.by_ref().take(ITEMS_PER_CHUNK) {
                    enc.item(&item, out);
                }
                items.len() == 0
            }
        };
        if let Some(limit) = line_limit {
            if self.format == Format::Json && out.len() - self.start > limit {
                out.truncate(self.start);
                let e = ErrorReply::new(
                    "too_large",
                    format!("the reply is over {limit} bytes, more than one WebSocket message may hold; use LIMIT and OFFSET, or the text format"),
                );
                Reply::Error(e).encode(self.format, self.id.as_ref(), out);
                return (Step::Done, None);
            }
        }
        if !done {
            return (Step::More, Some(self));
        }
        match self.source {
            Source::Rows { enc, .. } => enc.finish(out),
            Source::Items { enc, .. } => enc.finish(out),
        }
        (Step::Done, None)
    }
}
