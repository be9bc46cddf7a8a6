//! Avro binary datums read straight into serde types, guided by the schema.
//!
//! apache-avro reads a datum into a tree of `Value`s and then deserializes
//! the tree: an allocation per field and a second pass. Every consumer
//! decodes every record it reads, so records written with the current
//! schema are read here instead, from the bytes to the struct in one pass,
//! with strings and bytes borrowed from the input until the struct takes
//! them. The schema must have no named references left (the current
//! schema's reference-free copy is used). Anything this reader does not
//! handle (decimals, durations, references) is an error, and the caller
//! falls back to apache-avro's reader, which also gives the error message
//! for bad input.

use std::fmt;

use apache_avro::Schema;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

/// Why a datum could not be read.
#[derive(Debug)]
pub struct DatumError(String);

impl fmt::Display for DatumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DatumError {}

impl de::Error for DatumError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self(message.to_string())
    }
}

fn error(message: impl Into<String>) -> DatumError {
    DatumError(message.into())
}

/// Reads one datum of `schema` from the whole of `bytes` into a `T`.
pub fn from_slice<T: DeserializeOwned>(schema: &Schema, bytes: &[u8]) -> Result<T, DatumError> {
    let mut input = Input(bytes);
    let value = T::deserialize(Datum {
        input: &mut input,
        schema,
    })?;
    if !input.0.is_empty() {
        return Err(error(format!("{} bytes after the datum", input.0.len())));
    }
    Ok(value)
}

/// The bytes not read yet.
struct Input<'de>(&'de [u8]);

impl<'de> Input<'de> {
    fn byte(&mut self) -> Result<u8, DatumError> {
        let (&first, rest) = self
            .0
            .split_first()
            .ok_or_else(|| error("datum ends early"))?;
        self.0 = rest;
        Ok(first)
    }

    fn take(&mut self, n: usize) -> Result<&'de [u8], DatumError> {
        if n > self.0.len() {
            return Err(error("datum ends early"));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    /// A zig-zag variable-length long.
    fn long(&mut self) -> Result<i64, DatumError> {
        let mut raw = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            raw |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err(error("variable-length integer longer than 10 bytes"))
    }

    fn int(&mut self) -> Result<i32, DatumError> {
        let long = self.long()?;
        i32::try_from(long).map_err(|_| error(format!("int out of range: {long}")))
    }

    /// A length or count: not negative, and no more than the bytes left
    /// (every item of the schemas read here takes at least one byte).
    fn len(&mut self) -> Result<usize, DatumError> {
        let long = self.long()?;
        usize::try_from(long)
            .ok()
            .filter(|n| *n <= self.0.len())
            .ok_or_else(|| error(format!("length {long} does not fit the datum")))
    }

    fn bytes(&mut self) -> Result<&'de [u8], DatumError> {
        let n = self.len()?;
        self.take(n)
    }

    fn str(&mut self) -> Result<&'de str, DatumError> {
        std::str::from_utf8(self.bytes()?).map_err(|e| error(format!("string not UTF-8: {e}")))
    }

    /// The item count of the next block of an array or map; 0 at the end.
    fn block(&mut self) -> Result<usize, DatumError> {
        let count = self.long()?;
        if count < 0 {
            // A negative count is followed by the block's size in bytes.
            self.long()?;
        }
        let count = count.unsigned_abs();
        usize::try_from(count)
            .ok()
            .filter(|n| *n <= self.0.len())
            .ok_or_else(|| error(format!("block of {count} items does not fit the datum")))
    }
}

/// One value of `schema` at the front of `input`.
struct Datum<'a, 'de> {
    input: &'a mut Input<'de>,
    schema: &'a Schema,
}

impl<'a, 'de> Datum<'a, 'de> {
    fn branch(&mut self) -> Result<&'a Schema, DatumError> {
        let Schema::Union(union) = self.schema else {
            return Ok(self.schema);
        };
        let index = self.input.long()?;
        usize::try_from(index)
            .ok()
            .and_then(|i| union.variants().get(i))
            .ok_or_else(|| error(format!("union branch {index} out of range")))
    }
}

impl<'de> de::Deserializer<'de> for Datum<'_, 'de> {
    type Error = DatumError;

    fn deserialize_any<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, DatumError> {
        match self.schema {
            Schema::Null => visitor.visit_unit(),
            Schema::Boolean => match self.input.byte()? {
                0 => visitor.visit_bool(false),
                1 => visitor.visit_bool(true),
                other => Err(error(format!("boolean byte {other}"))),
            },
            Schema::Int | Schema::Date | Schema::TimeMillis => visitor.visit_i32(self.input.int()?),
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => visitor.visit_i64(self.input.long()?),
            Schema::Float => {
                let raw = self.input.take(4)?;
                visitor.visit_f32(f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
            }
            Schema::Double => {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(self.input.take(8)?);
                visitor.visit_f64(f64::from_le_bytes(raw))
            }
            Schema::Bytes => visitor.visit_borrowed_bytes(self.input.bytes()?),
            Schema::String => visitor.visit_borrowed_str(self.input.str()?),
            Schema::Uuid => {
                // As apache-avro reads it: 16 bytes are the UUID itself, any
                // other text must parse as one, and the value is the UUID's
                // lower-case hyphenated form.
                let raw = self.input.bytes()?;
                let parsed = if raw.len() == 16 {
                    uuid::Uuid::from_slice(raw).map_err(|e| error(e.to_string()))?
                } else {
                    let text = std::str::from_utf8(raw)
                        .map_err(|e| error(format!("uuid not UTF-8: {e}")))?;
                    let parsed = uuid::Uuid::try_parse(text).map_err(|e| error(e.to_string()))?;
                    if text.len() == 36 && !text.bytes().any(|b| b.is_ascii_uppercase()) {
                        return visitor.visit_borrowed_str(text);
                    }
                    parsed
                };
                visitor.visit_string(parsed.hyphenated().to_string())
            }
            Schema::Fixed(fixed) => visitor.visit_borrowed_bytes(self.input.take(fixed.size)?),
            Schema::Enum(schema) => visitor.visit_str(symbol(self.input, schema)?),
            Schema::Union(_) => {
                let schema = self.branch()?;
                let input = self.input;
                de::Deserializer::deserialize_any(Datum { input, schema }, visitor)
            }
            Schema::Array(array) => {
                let blocks = Blocks::start(self.input)?;
                visitor.visit_seq(Items {
                    input: self.input,
                    schema: &array.items,
                    blocks,
                })
            }
            Schema::Map(map) => {
                let blocks = Blocks::start(self.input)?;
                visitor.visit_map(Entries {
                    input: self.input,
                    schema: &map.types,
                    blocks,
                })
            }
            Schema::Record(record) => visitor.visit_map(Fields {
                input: self.input,
                fields: &record.fields,
                next: 0,
            }),
            other => Err(error(format!("schema not read directly: {other:?}"))),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, DatumError> {
        match self.branch()? {
            Schema::Null => visitor.visit_none(),
            schema => visitor.visit_some(Datum {
                input: self.input,
                schema,
            }),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DatumError> {
        match self.schema {
            Schema::Enum(schema) => {
                let symbol = symbol(self.input, schema)?;
                visitor.visit_enum(IntoDeserializer::<DatumError>::into_deserializer(symbol))
            }
            _ => self.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple tuple_struct
        map struct identifier ignored_any
    }
}

fn symbol<'s>(
    input: &mut Input<'_>,
    schema: &'s apache_avro::schema::EnumSchema,
) -> Result<&'s str, DatumError> {
    let index = input.long()?;
    usize::try_from(index)
        .ok()
        .and_then(|i| schema.symbols.get(i))
        .map(String::as_str)
        .ok_or_else(|| error(format!("enum symbol {index} out of range")))
}

/// Where the items of an array or map stand, block by block.
struct Blocks {
    /// Items left in the current block.
    left: usize,
    /// Whether the closing empty block was read.
    ended: bool,
}

impl Blocks {
    fn start(input: &mut Input<'_>) -> Result<Self, DatumError> {
        let left = input.block()?;
        Ok(Self {
            left,
            ended: left == 0,
        })
    }

    /// Whether another item follows (reading the next block's count when
    /// the current one is done); counts it as taken.
    fn next(&mut self, input: &mut Input<'_>) -> Result<bool, DatumError> {
        if self.left == 0 {
            if self.ended {
                return Ok(false);
            }
            self.left = input.block()?;
            if self.left == 0 {
                self.ended = true;
                return Ok(false);
            }
        }
        self.left -= 1;
        Ok(true)
    }
}

/// The items of an array.
struct Items<'a, 'de> {
    input: &'a mut Input<'de>,
    schema: &'a Schema,
    blocks: Blocks,
}

impl<'de> SeqAccess<'de> for Items<'_, 'de> {
    type Error = DatumError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DatumError> {
        if !self.blocks.next(self.input)? {
            return Ok(None);
        }
        seed.deserialize(Datum {
            input: self.input,
            schema: self.schema,
        })
        .map(Some)
    }
}

/// The entries of a map: string keys.
struct Entries<'a, 'de> {
    input: &'a mut Input<'de>,
    schema: &'a Schema,
    blocks: Blocks,
}

impl<'de> MapAccess<'de> for Entries<'_, 'de> {
    type Error = DatumError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DatumError> {
        if !self.blocks.next(self.input)? {
            return Ok(None);
        }
        let key = self.input.str()?;
        seed.deserialize(de::value::BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DatumError> {
        seed.deserialize(Datum {
            input: self.input,
            schema: self.schema,
        })
    }
}

/// The fields of a record, in the schema's order.
struct Fields<'a, 'de> {
    input: &'a mut Input<'de>,
    fields: &'a [apache_avro::schema::RecordField],
    next: usize,
}

impl<'de> MapAccess<'de> for Fields<'_, 'de> {
    type Error = DatumError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DatumError> {
        let Some(field) = self.fields.get(self.next) else {
            return Ok(None);
        };
        seed.deserialize(IntoDeserializer::<DatumError>::into_deserializer(
            field.name.as_str(),
        ))
        .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DatumError> {
        let field = self
            .fields
            .get(self.next)
            .ok_or_else(|| error("a record value asked for past its last field"))?;
        self.next += 1;
        seed.deserialize(Datum {
            input: self.input,
            schema: &field.schema,
        })
    }
}
