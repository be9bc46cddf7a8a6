//! Avro schemas of the topic values and the wire framing around each encoded record.
//!
//! Two framings are understood on read, whatever is configured for write:
//!
//! - **single-object encoding** (the default): `C3 01`, the 8-byte little-endian
//!   CRC-64-AVRO (Rabin) fingerprint of the writer's schema, then the Avro datum.
//!   The reader finds the writer's schema by fingerprint among the current
//!   schemas and every released copy under `schemas/avro/released/`, and
//!   resolves it to the current schema, so old records stay readable.
//! - **Confluent schema-registry framing**, used for writes when a registry
//!   address is configured: `00`, the 4-byte big-endian schema id, then the
//!   datum. Schemas are registered under the record-name subject strategy
//!   (`industrysms.events.SmsRequest`) so one subject serves every topic.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use apache_avro::headers::HeaderBuilder;
use apache_avro::rabin::Rabin;
use apache_avro::schema::{NamesRef, ResolvedSchema, UnionSchema};
use apache_avro::{GenericSingleObjectReader, Schema};
use serde::de::DeserializeOwned;
use serde::Serialize;

mod datum;

use crate::error::CoreError;
use crate::events::{
    CarrierReport, DeadLetter, DispatchEvent, FinalStatus, SmsRequest, SubscriptionRecord,
    UplinkMessage,
};

/// The first two bytes of an Avro single-object encoded record.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// The first byte of a Confluent-framed record.
pub const CONFLUENT_MAGIC: u8 = 0x00;

/// The released schema versions kept for compatibility: (version, file stem, text).
/// A new release adds its copies here; none is ever removed.
const RELEASED: &[(&str, &str, &str)] = &[
    (
        "v1",
        "sms_request",
        include_str!("../../../schemas/avro/released/v1/sms_request.avsc"),
    ),
    (
        "v1",
        "dispatch_event",
        include_str!("../../../schemas/avro/released/v1/dispatch_event.avsc"),
    ),
    (
        "v1",
        "carrier_report",
        include_str!("../../../schemas/avro/released/v1/carrier_report.avsc"),
    ),
    (
        "v1",
        "uplink_message",
        include_str!("../../../schemas/avro/released/v1/uplink_message.avsc"),
    ),
    (
        "v1",
        "final_status",
        include_str!("../../../schemas/avro/released/v1/final_status.avsc"),
    ),
    (
        "v1",
        "subscription_record",
        include_str!("../../../schemas/avro/released/v1/subscription_record.avsc"),
    ),
    (
        "v1",
        "dead_letter",
        include_str!("../../../schemas/avro/released/v1/dead_letter.avsc"),
    ),
];

/// A record type carried on a topic, bound to its schema file.
pub trait AvroRecord: Serialize + DeserializeOwned {
    /// The file stem under `schemas/avro/`, e.g. `sms_request`.
    const SCHEMA_FILE: &'static str;
    /// The schema's text as committed.
    const SCHEMA_TEXT: &'static str;

    /// The parsed current schema with its fingerprint and the released versions.
    fn schema() -> &'static RecordSchema;
}

/// A parsed schema, its fingerprint, and the writer schemas it can read.
pub struct RecordSchema {
    pub file: &'static str,
    pub full_name: String,
    pub schema: Schema,
    pub fingerprint: [u8; 8],
    /// The current schema with every reference to a named type replaced by
    /// the type itself: the same encoding, and what the serde encoder, which
    /// is given no table of names, can follow. Records are written from their
    /// serde form straight to bytes with it, without an intermediate value
    /// tree or a schema resolution per record.
    write_schema: Schema,
    /// Every schema (current and released) by fingerprint, with its named
    /// types resolved once rather than at every record.
    writers: HashMap<[u8; 8], GenericSingleObjectReader>,
}

impl std::fmt::Debug for RecordSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordSchema")
            .field("file", &self.file)
            .field("full_name", &self.full_name)
            .field("fingerprint", &hex_string(&self.fingerprint))
            .field("writers", &self.writers.len())
            .finish()
    }
}

/// The single-object header of a writer schema: magic, then fingerprint.
struct SingleObjectHeader([u8; 8]);

impl HeaderBuilder for SingleObjectHeader {
    fn build_header(&self) -> Vec<u8> {
        [&SINGLE_OBJECT_MAGIC[..], &self.0[..]].concat()
    }
}

fn single_object_reader(
    file: String,
    schema: &Schema,
) -> Result<GenericSingleObjectReader, CoreError> {
    let header = SingleObjectHeader(fingerprint(schema));
    GenericSingleObjectReader::new_with_header_builder(schema.clone(), header).map_err(|e| {
        CoreError::Schema {
            file,
            source: Box::new(e),
        }
    })
}

impl RecordSchema {
    fn load(file: &'static str, text: &'static str) -> Result<Self, CoreError> {
        let schema = Schema::parse_str(text).map_err(|e| CoreError::Schema {
            file: file.into(),
            source: Box::new(e),
        })?;
        let full_name = match &schema {
            Schema::Record(r) => r.name.fullname(None),
            _ => return Err(CoreError::SchemaNotRecord(file.into())),
        };
        let fingerprint = fingerprint(&schema);
        let write_schema = {
            let resolved = ResolvedSchema::try_from(&schema).map_err(|e| CoreError::Schema {
                file: file.into(),
                source: Box::new(e),
            })?;
            inline_references(&schema, resolved.get_names(), 0)
        };
        let mut writers = HashMap::new();
        writers.insert(fingerprint, single_object_reader(file.into(), &schema)?);
        for (version, stem, released_text) in RELEASED.iter().filter(|(_, s, _)| *s == file) {
            let file = format!("released/{version}/{stem}");
            let released = Schema::parse_str(released_text).map_err(|e| CoreError::Schema {
                file: file.clone(),
                source: Box::new(e),
            })?;
            writers.insert(
                self::fingerprint(&released),
                single_object_reader(file, &released)?,
            );
        }
        Ok(Self {
            file,
            full_name,
            schema,
            fingerprint,
            write_schema,
            writers,
        })
    }

    /// The released copies of this schema, oldest first, as (version, schema).
    pub fn released(&self) -> Vec<(&'static str, Schema)> {
        RELEASED
            .iter()
            .filter(|(_, stem, _)| *stem == self.file)
            .filter_map(|(v, _, text)| Schema::parse_str(text).ok().map(|s| (*v, s)))
            .collect()
    }

    fn reader(&self, fingerprint: &[u8; 8]) -> Option<&GenericSingleObjectReader> {
        self.writers.get(fingerprint)
    }
}

/// How deep named types may nest inside each other when references are
/// replaced; a recursive type stops here and keeps its reference (its records
/// then fail to encode with a clear error rather than loop).
const MAX_NESTING: usize = 32;

/// `schema` with each reference to a named type replaced by its definition.
fn inline_references(schema: &Schema, names: &NamesRef<'_>, depth: usize) -> Schema {
    if depth > MAX_NESTING {
        return schema.clone();
    }
    let inline = |inner: &Schema| inline_references(inner, names, depth + 1);
    match schema {
        Schema::Ref { name } => names
            .get(name)
            .map_or_else(|| schema.clone(), |named| inline(named)),
        Schema::Record(record) => {
            let mut record = record.clone();
            for field in &mut record.fields {
                field.schema = inline(&field.schema);
            }
            Schema::Record(record)
        }
        Schema::Array(array) => {
            let mut array = array.clone();
            array.items = Box::new(inline(&array.items));
            Schema::Array(array)
        }
        Schema::Map(map) => {
            let mut map = map.clone();
            map.types = Box::new(inline(&map.types));
            Schema::Map(map)
        }
        Schema::Union(union) => UnionSchema::new(union.variants().iter().map(inline).collect())
            .map_or_else(|_| schema.clone(), Schema::Union),
        other => other.clone(),
    }
}

/// The CRC-64-AVRO fingerprint of a schema's canonical form, little-endian.
pub fn fingerprint(schema: &Schema) -> [u8; 8] {
    let fp = schema.fingerprint::<Rabin>();
    let mut out = [0u8; 8];
    out.copy_from_slice(&fp.bytes[..8]);
    out
}

macro_rules! avro_record {
    ($ty:ty, $file:literal) => {
        impl AvroRecord for $ty {
            const SCHEMA_FILE: &'static str = $file;
            const SCHEMA_TEXT: &'static str =
                include_str!(concat!("../../../schemas/avro/", $file, ".avsc"));

            fn schema() -> &'static RecordSchema {
                static SCHEMA: OnceLock<RecordSchema> = OnceLock::new();
                SCHEMA.get_or_init(|| match RecordSchema::load($file, Self::SCHEMA_TEXT) {
                    Ok(schema) => schema,
                    // The schema text is compiled in and checked by the tests.
                    Err(e) => panic!("schema {} does not parse: {e}", $file),
                })
            }
        }
    };
}

avro_record!(SmsRequest, "sms_request");
avro_record!(DispatchEvent, "dispatch_event");
avro_record!(CarrierReport, "carrier_report");
avro_record!(UplinkMessage, "uplink_message");
avro_record!(FinalStatus, "final_status");
avro_record!(SubscriptionRecord, "subscription_record");
avro_record!(DeadLetter, "dead_letter");

/// Encodes a record as a bare Avro datum with its current schema.
pub fn to_datum<T: AvroRecord>(record: &T) -> Result<Vec<u8>, CoreError> {
    let mut out = Vec::with_capacity(256);
    write_datum(record, &mut out)?;
    Ok(out)
}

/// Appends a record's bare Avro datum to `out`. A record that does not fit
/// its schema is an error and leaves `out` as it was.
fn write_datum<T: AvroRecord>(record: &T, out: &mut Vec<u8>) -> Result<(), CoreError> {
    let start = out.len();
    apache_avro::write_avro_datum_ref(&T::schema().write_schema, record, out).map_err(|e| {
        out.truncate(start);
        CoreError::avro(e)
    })?;
    Ok(())
}

/// Decodes a bare Avro datum written with `writer` into the current type;
/// `resolve` is false when the writer's schema is the current one.
pub fn from_datum<T: AvroRecord>(
    writer: &Schema,
    resolve: bool,
    mut datum: &[u8],
) -> Result<T, CoreError> {
    let reader = resolve.then(|| &T::schema().schema);
    let value =
        apache_avro::from_avro_datum(writer, &mut datum, reader).map_err(CoreError::avro)?;
    if !datum.is_empty() {
        return Err(CoreError::TrailingBytes(datum.len()));
    }
    apache_avro::from_value(&value).map_err(CoreError::avro)
}

/// How records are framed on write. Reads accept both framings.
#[derive(Clone, Default)]
pub enum Framing {
    /// Avro single-object encoding: magic, schema fingerprint, datum.
    #[default]
    SingleObject,
    /// Confluent framing with ids from a schema registry.
    Registry(Arc<SchemaRegistry>),
}

/// Encodes and decodes topic values in the configured framing.
#[derive(Clone, Default)]
pub struct AvroCodec {
    framing: Framing,
}

impl AvroCodec {
    /// A codec writing single-object encoded records.
    pub fn single_object() -> Self {
        Self {
            framing: Framing::SingleObject,
        }
    }

    /// A codec writing Confluent-framed records; registers every current
    /// schema with the registry at `url` first.
    pub async fn with_registry(url: &str) -> Result<Self, CoreError> {
        let registry = SchemaRegistry::new(url)?;
        registry.register_all().await?;
        Ok(Self {
            framing: Framing::Registry(Arc::new(registry)),
        })
    }

    /// Frames and encodes one record.
    pub fn encode<T: AvroRecord>(&self, record: &T) -> Result<Vec<u8>, CoreError> {
        let mut out = Vec::with_capacity(256);
        match &self.framing {
            Framing::SingleObject => {
                out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
                out.extend_from_slice(&T::schema().fingerprint);
            }
            Framing::Registry(registry) => {
                let id = registry.id_of(&T::schema().full_name)?;
                out.push(CONFLUENT_MAGIC);
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        write_datum(record, &mut out)?;
        Ok(out)
    }

    /// Decodes one framed record of type `T`, resolving from whichever
    /// version of the schema wrote it.
    pub async fn decode<T: AvroRecord>(&self, bytes: &[u8]) -> Result<T, CoreError> {
        if bytes.first() == Some(&CONFLUENT_MAGIC) {
            return self.decode_confluent(bytes).await;
        }
        decode_single_object(bytes)
    }

    async fn decode_confluent<T: AvroRecord>(&self, bytes: &[u8]) -> Result<T, CoreError> {
        let Some(id_bytes) = bytes.get(1..5) else {
            return Err(CoreError::NotFramed(preview(bytes)));
        };
        let id = u32::from_be_bytes([id_bytes[0], id_bytes[1], id_bytes[2], id_bytes[3]]);
        let Framing::Registry(registry) = &self.framing else {
            return Err(CoreError::NoRegistry(id));
        };
        let writer = registry.schema_by_id(id).await?;
        from_datum::<T>(&writer, true, &bytes[5..])
    }
}

/// Reads a bare datum written with the current schema of `T` straight into
/// a `T`, without apache-avro's value tree: what the single-object reader
/// does for records of the current schema (and falls back from).
pub fn read_current_datum<T: AvroRecord>(datum: &[u8]) -> Result<T, CoreError> {
    datum::from_slice::<T>(&T::schema().write_schema, datum)
        .map_err(|e| CoreError::Datum(e.to_string()))
}

/// Decodes a single-object encoded record; needs no registry.
pub fn decode_single_object<T: AvroRecord>(bytes: &[u8]) -> Result<T, CoreError> {
    if bytes.len() < 10 || bytes[..2] != SINGLE_OBJECT_MAGIC {
        return Err(CoreError::NotFramed(preview(bytes)));
    }
    let mut fp = [0u8; 8];
    fp.copy_from_slice(&bytes[2..10]);
    let schema = T::schema();
    let reader = schema
        .reader(&fp)
        .ok_or_else(|| CoreError::UnknownFingerprint {
            record: schema.full_name.clone(),
            fingerprint: hex_string(&fp),
        })?;
    if fp == schema.fingerprint {
        // Written with the current schema: read straight into the struct.
        // What that reader refuses is read again below, for the error.
        if let Ok(record) = read_current_datum::<T>(&bytes[10..]) {
            return Ok(record);
        }
    }
    let mut rest = bytes;
    let value = reader.read_value(&mut rest).map_err(CoreError::avro)?;
    if !rest.is_empty() {
        return Err(CoreError::TrailingBytes(rest.len()));
    }
    let value = if fp == schema.fingerprint {
        value
    } else {
        // Written with a released version: resolved to the current one.
        value.resolve(&schema.schema).map_err(CoreError::avro)?
    };
    apache_avro::from_value(&value).map_err(CoreError::avro)
}

fn preview(bytes: &[u8]) -> String {
    hex_string(&bytes[..bytes.len().min(8)])
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A minimal Confluent-compatible schema registry client: registers the
/// current schemas and fetches writer schemas by id, caching both.
pub struct SchemaRegistry {
    base: String,
    http: reqwest::Client,
    ids: RwLock<HashMap<String, u32>>,
    schemas: RwLock<HashMap<u32, Arc<Schema>>>,
}

impl SchemaRegistry {
    pub fn new(url: &str) -> Result<Self, CoreError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| CoreError::Registry(format!("building the http client: {e}")))?;
        Ok(Self {
            base: url.trim_end_matches('/').to_string(),
            http,
            ids: RwLock::default(),
            schemas: RwLock::default(),
        })
    }

    async fn register_all(&self) -> Result<(), CoreError> {
        self.register::<SmsRequest>().await?;
        self.register::<DispatchEvent>().await?;
        self.register::<CarrierReport>().await?;
        self.register::<UplinkMessage>().await?;
        self.register::<FinalStatus>().await?;
        self.register::<SubscriptionRecord>().await?;
        self.register::<DeadLetter>().await?;
        Ok(())
    }

    async fn register<T: AvroRecord>(&self) -> Result<(), CoreError> {
        let subject = &T::schema().full_name;
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let body = serde_json::json!({ "schema": T::schema().schema.canonical_form() });
        let answer: serde_json::Value = self.call(self.http.post(&url).json(&body)).await?;
        let id = answer["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| {
                CoreError::Registry(format!("{url} answered without an id: {answer}"))
            })?;
        if let Ok(mut ids) = self.ids.write() {
            ids.insert(subject.clone(), id);
        }
        if let Ok(mut schemas) = self.schemas.write() {
            schemas.insert(id, Arc::new(T::schema().schema.clone()));
        }
        Ok(())
    }

    fn id_of(&self, subject: &str) -> Result<u32, CoreError> {
        self.ids
            .read()
            .ok()
            .and_then(|ids| ids.get(subject).copied())
            .ok_or_else(|| CoreError::Registry(format!("{subject} is not registered")))
    }

    async fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, CoreError> {
        if let Some(s) = self.schemas.read().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(s);
        }
        let url = format!("{}/schemas/ids/{id}", self.base);
        let answer: serde_json::Value = self.call(self.http.get(&url)).await?;
        let text = answer["schema"]
            .as_str()
            .ok_or_else(|| CoreError::Registry(format!("{url} answered without a schema")))?;
        let schema = Arc::new(Schema::parse_str(text).map_err(|e| CoreError::Schema {
            file: format!("registry id {id}"),
            source: Box::new(e),
        })?);
        if let Ok(mut schemas) = self.schemas.write() {
            schemas.insert(id, schema.clone());
        }
        Ok(schema)
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<serde_json::Value, CoreError> {
        let response = request
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .send()
            .await
            .map_err(|e| CoreError::Registry(format!("schema registry unreachable: {e}")))?;
        let status = response.status();
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| CoreError::Registry(format!("schema registry answer unreadable: {e}")))?;
        if !status.is_success() {
            return Err(CoreError::Registry(format!(
                "schema registry answered {status}: {body}"
            )));
        }
        Ok(body)
    }
}
