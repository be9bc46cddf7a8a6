//! JSON lines of replayed records: decoded and serialised on every core, written in the order they were read.
//!
//! The reading loop copies records into [`Chunk`]s (one byte buffer per
//! chunk, no allocation per record) and hands each to [`LineWriter::push`].
//! Worker threads decode the chunks' Avro values and serialise their lines,
//! each chunk into one buffer; a writer thread writes the buffers in the
//! order the chunks were pushed, so the file holds the records in the order
//! the consumer returned them (offset order within each partition). Both
//! queues are bounded: at most [`CHUNKS_IN_FLIGHT`] chunks are read ahead
//! of the file.

use std::io::Write;
use std::ops::Range;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::Serialize;
use sms_core::avro::{decode_single_object, AvroRecord};
use sms_core::events::{
    CarrierReport, DeadLetter, DispatchEvent, FinalStatus, SmsRequest, SubscriptionRecord,
    UplinkMessage,
};

use super::TopicKind;
use crate::error::SmsctlError;

/// Records in one chunk handed to a worker.
pub const CHUNK_RECORDS: usize = 2_048;
/// Chunks read but not yet written, at most.
pub const CHUNKS_IN_FLIGHT: usize = 8;

/// One record's place in its chunk's byte buffer.
struct Entry {
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<Range<usize>>,
    payload: Range<usize>,
}

/// Records read from Kafka, copied into one buffer.
#[derive(Default)]
pub struct Chunk {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
}

impl Chunk {
    fn with_capacity(records: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(records * 256),
            entries: Vec::with_capacity(records),
        }
    }

    /// Copies one record in.
    pub fn push(
        &mut self,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        key: Option<&[u8]>,
        payload: &[u8],
    ) {
        let key = key.map(|k| self.append(k));
        let payload = self.append(payload);
        self.entries.push(Entry {
            partition,
            offset,
            timestamp,
            key,
            payload,
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn append(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        start..self.bytes.len()
    }
}

/// A chunk's lines, ready to write.
struct Encoded {
    lines: Vec<u8>,
    written: u64,
    undecodable: u64,
}

/// A chunk for a worker, and where its lines go.
type Job = (Chunk, SyncSender<Encoded>);

/// What the writer thread did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinesWritten {
    pub written: u64,
    pub undecodable: u64,
}

/// Decodes and writes chunks of records as JSON lines on worker threads.
pub struct LineWriter {
    jobs: Option<SyncSender<Job>>,
    order: Option<SyncSender<Receiver<Encoded>>>,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<Result<LinesWritten, SmsctlError>>>,
    filling: Chunk,
}

impl LineWriter {
    /// Starts `workers` decoding threads (at least one) and the writer
    /// thread writing to `out`; `path` names `out` in errors.
    pub fn start(
        out: Box<dyn Write + Send>,
        path: String,
        topic: &str,
        kind: TopicKind,
        workers: usize,
    ) -> Self {
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(CHUNKS_IN_FLIGHT);
        let (order_tx, order_rx) = mpsc::sync_channel::<Receiver<Encoded>>(CHUNKS_IN_FLIGHT);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let topic: Arc<str> = Arc::from(topic);
        let workers = (0..workers.max(1))
            .map(|_| {
                let jobs = Arc::clone(&jobs_rx);
                let topic = Arc::clone(&topic);
                std::thread::spawn(move || decode_chunks(&jobs, &topic, kind))
            })
            .collect();
        let writer = std::thread::spawn(move || write_in_order(out, &path, order_rx));
        Self {
            jobs: Some(jobs_tx),
            order: Some(order_tx),
            workers,
            writer: Some(writer),
            filling: Chunk::with_capacity(CHUNK_RECORDS),
        }
    }

    /// Adds one record; hands the chunk on when it is full. Fails only when
    /// the writer thread stopped (its error comes from [`Self::finish`]).
    pub fn push(
        &mut self,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(), WriterStopped> {
        self.filling
            .push(partition, offset, timestamp, key, payload);
        if self.filling.len() >= CHUNK_RECORDS {
            self.hand_on()?;
        }
        Ok(())
    }

    fn hand_on(&mut self) -> Result<(), WriterStopped> {
        let chunk = std::mem::replace(&mut self.filling, Chunk::with_capacity(CHUNK_RECORDS));
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        // The writer learns the chunk's place first, so the order is the
        // order of pushes whichever worker finishes first.
        let order = self.order.as_ref().ok_or(WriterStopped)?;
        order.send(done_rx).map_err(|_| WriterStopped)?;
        let jobs = self.jobs.as_ref().ok_or(WriterStopped)?;
        jobs.send((chunk, done_tx)).map_err(|_| WriterStopped)?;
        Ok(())
    }

    /// Hands on the last chunk, waits until every line is written and
    /// flushed, and says how many were.
    pub fn finish(mut self) -> Result<LinesWritten, SmsctlError> {
        if !self.filling.is_empty() {
            // A stopped writer has its own error, returned below.
            let _ = self.hand_on();
        }
        self.jobs = None;
        self.order = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(SmsctlError::Io {
                path: "replay output".into(),
                source: std::io::Error::other("the JSON-lines writer thread stopped"),
            }),
        }
    }
}

/// The writer thread stopped before the replay ended; [`LineWriter::finish`]
/// gives its reason.
#[derive(Debug, Clone, Copy)]
pub struct WriterStopped;

fn decode_chunks(jobs: &Mutex<Receiver<Job>>, topic: &str, kind: TopicKind) {
    loop {
        // Hold the lock only to take the next chunk.
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok((chunk, done)) = job else {
            return;
        };
        if done.send(encode_chunk(&chunk, topic, kind)).is_err() {
            return;
        }
    }
}

fn write_in_order(
    mut out: Box<dyn Write + Send>,
    path: &str,
    order: Receiver<Receiver<Encoded>>,
) -> Result<LinesWritten, SmsctlError> {
    let io_error = |source| SmsctlError::Io {
        path: path.to_string(),
        source,
    };
    let mut done = LinesWritten::default();
    for next in order {
        let encoded = next.recv().map_err(|_| {
            io_error(std::io::Error::other(
                "a decoding thread stopped before its chunk was done",
            ))
        })?;
        out.write_all(&encoded.lines).map_err(io_error)?;
        done.written += encoded.written;
        done.undecodable += encoded.undecodable;
    }
    out.flush().map_err(io_error)?;
    Ok(done)
}

/// One line of the output.
#[derive(Serialize)]
struct Line<'a, R> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<&'a str>,
    record: R,
}

fn encode_chunk(chunk: &Chunk, topic: &str, kind: TopicKind) -> Encoded {
    let mut encoded = Encoded {
        lines: Vec::with_capacity(chunk.bytes.len() * 3),
        written: 0,
        undecodable: 0,
    };
    for entry in &chunk.entries {
        let payload = &chunk.bytes[entry.payload.clone()];
        let key = entry
            .key
            .clone()
            .map(|range| String::from_utf8_lossy(&chunk.bytes[range]));
        let line = Line {
            topic,
            partition: entry.partition,
            offset: entry.offset,
            timestamp: entry.timestamp,
            key: key.as_deref(),
            record: (),
        };
        let out = &mut encoded.lines;
        let mark = out.len();
        let result = match kind {
            TopicKind::Request | TopicKind::RetryRequest => {
                write_line::<SmsRequest>(out, &line, payload)
            }
            TopicKind::Dispatch => write_line::<DispatchEvent>(out, &line, payload),
            TopicKind::Report => write_line::<CarrierReport>(out, &line, payload),
            TopicKind::Uplink => write_line::<UplinkMessage>(out, &line, payload),
            TopicKind::Status => write_line::<FinalStatus>(out, &line, payload),
            TopicKind::Subscription => write_line::<SubscriptionRecord>(out, &line, payload),
            TopicKind::DeadLetter => write_line::<DeadLetter>(out, &line, payload),
            TopicKind::Raw => {
                super::decode_json(kind, payload).and_then(|record| serialise(out, &line, record))
            }
        };
        match result {
            Ok(()) => {
                out.push(b'\n');
                encoded.written += 1;
            }
            Err(reason) => {
                out.truncate(mark);
                encoded.undecodable += 1;
                let (partition, offset) = (entry.partition, entry.offset);
                tracing::warn!(partition, offset, %reason, "record does not decode");
            }
        }
    }
    encoded
}

/// Decodes `payload` as a `T` and writes it as the record of `line`.
fn write_line<T: AvroRecord + Serialize>(
    out: &mut Vec<u8>,
    line: &Line<'_, ()>,
    payload: &[u8],
) -> Result<(), String> {
    let record = decode_single_object::<T>(payload).map_err(|e| e.to_string())?;
    serialise(out, line, record)
}

fn serialise<R: Serialize>(
    out: &mut Vec<u8>,
    line: &Line<'_, ()>,
    record: R,
) -> Result<(), String> {
    let line = Line {
        topic: line.topic,
        partition: line.partition,
        offset: line.offset,
        timestamp: line.timestamp,
        key: line.key,
        record,
    };
    serde_json::to_writer(out, &line).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sms_core::avro::AvroCodec;
    use sms_core::events::{FinalState, MessageKind};

    fn status(n: u64) -> FinalStatus {
        FinalStatus {
            message_id: format!("00000000-0000-4000-8000-{n:012x}"),
            request_id: format!("req-{n}"),
            phone: "8613000000001".into(),
            kind: MessageKind::Notice,
            status: FinalState::Delivered,
            failure_category: None,
            error_code: None,
            refusal_reason: None,
            billed_segments: 1,
            segments_delivered: 1,
            accepted_at: 1_000,
            submitted_at: Some(1_020),
            gateway_response_at: Some(1_060),
            report_at: Some(3_000),
            decided_at: 3_001,
            within_seven_seconds: true,
        }
    }

    /// A `Write` the test reads back after the writer thread is done.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_keep_the_order_of_pushes_across_workers_and_count_bad_records() {
        let codec = AvroCodec::single_object();
        let out = Shared::default();
        let mut writer = LineWriter::start(
            Box::new(out.clone()),
            "memory".into(),
            "sms.status",
            TopicKind::Status,
            3,
        );
        // Several chunks, with an undecodable record every 1,000.
        let records = CHUNK_RECORDS as u64 * 5 + 17;
        for n in 0..records {
            let payload = if n % 1_000 == 999 {
                b"not avro".to_vec()
            } else {
                codec.encode(&status(n)).expect("encodes")
            };
            writer
                .push(
                    n as i32 % 3,
                    n as i64,
                    Some(n as i64 + 5),
                    Some(b"8613000000001"),
                    &payload,
                )
                .expect("writer runs");
        }
        let done = writer.finish().expect("written");

        let bad = records / 1_000;
        assert_eq!(done.undecodable, bad);
        assert_eq!(done.written, records - bad);
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        let offsets: Vec<i64> = text
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).expect("json");
                assert_eq!(value["topic"], "sms.status");
                assert_eq!(value["key"], "8613000000001");
                let offset = value["offset"].as_i64().expect("offset");
                assert_eq!(value["timestamp"].as_i64(), Some(offset + 5));
                assert_eq!(value["partition"].as_i64(), Some(offset % 3));
                assert_eq!(
                    value["record"]["message_id"],
                    format!("00000000-0000-4000-8000-{offset:012x}")
                );
                assert_eq!(value["record"]["status"], "DELIVERED");
                offset
            })
            .collect();
        let expected: Vec<i64> = (0..records as i64).filter(|n| n % 1_000 != 999).collect();
        assert_eq!(offsets, expected);
    }

    #[test]
    fn a_failing_output_is_an_error_naming_it() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let codec = AvroCodec::single_object();
        let payload = codec.encode(&status(1)).expect("encodes");
        let mut writer = LineWriter::start(
            Box::new(Full),
            "out.jsonl".into(),
            "sms.status",
            TopicKind::Status,
            2,
        );
        let mut stopped = false;
        for n in 0..(CHUNK_RECORDS * (CHUNKS_IN_FLIGHT + 4)) {
            if writer.push(0, n as i64, None, None, &payload).is_err() {
                stopped = true;
                break;
            }
        }
        assert!(stopped, "pushing stops once the writer has failed");
        let error = writer.finish().expect_err("the write failed");
        assert!(
            error.to_string().contains("out.jsonl") && error.to_string().contains("disk full"),
            "{error}"
        );
    }
}
