//! A typed object encoded in the stored layout ([`crate::object`]): `apiVersion`,
//! `kind` and `metadata` first, the other top-level fields after them in the order
//! the type serializes them, without going through a `serde_json::Value`.
//!
//! Kinds serialize `apiVersion` and `kind` first but `metadata` among the rest in
//! name order (an Event's `involvedObject` comes before it), so a field that comes
//! before `metadata` waits in a second buffer until `metadata` is written. Below the top
//! level, the type's own order stands: kube-openapi's generated types keep fields in
//! name order, so the bytes are mostly (not necessarily) those of the value encoding;
//! readers must not rely on more than the head (see `binding`).

use serde::ser::{self, Impossible, Serialize, SerializeStruct};

type Error = serde_json::Error;

/// `object`'s stored bytes; an error for what is not a struct (the caller then
/// encodes the object's JSON value).
pub fn encode<T: Serialize>(object: &T) -> Result<Vec<u8>, Error> {
    object.serialize(Top)
}

/// The object itself: only a struct is expected.
struct Top;

/// The fields of the object being written.
struct Fields {
    /// `{`, the head fields, and once `metadata` is written, the others.
    out: Vec<u8>,
    /// Fields that came before `metadata`, each preceded by a comma.
    early: Vec<u8>,
    /// Whether `metadata` was written (the layout always has it).
    metadata: bool,
}

fn write_field<T: ?Sized + Serialize>(out: &mut Vec<u8>, name: &str, value: &T) -> Result<(), Error> {
    serde_json::to_writer(&mut *out, name)?;
    out.push(b':');
    serde_json::to_writer(&mut *out, value)
}

impl Fields {
    fn write_metadata<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        if self.out.len() > 1 {
            self.out.push(b',');
        }
        write_field(&mut self.out, "metadata", value)?;
        self.out.append(&mut self.early);
        self.metadata = true;
        Ok(())
    }
}

impl SerializeStruct for Fields {
    type Ok = Vec<u8>;
    type Error = Error;

    fn serialize_field<T: ?Sized + Serialize>(&mut self, name: &'static str, value: &T) -> Result<(), Error> {
        if name == "metadata" {
            return self.write_metadata(value);
        }
        let head = crate::object::HEAD.contains(&name);
        let to = if head || self.metadata { &mut self.out } else { &mut self.early };
        if to.len() > 1 || !head {
            to.push(b',');
        }
        write_field(to, name, value)
    }

    fn end(mut self) -> Result<Vec<u8>, Error> {
        if !self.metadata {
            self.write_metadata(&serde_json::Map::new())?;
        }
        self.out.push(b'}');
        Ok(self.out)
    }
}

fn not_an_object() -> Error {
    ser::Error::custom("only an object has the stored layout")
}

impl ser::Serializer for Top {
    type Ok = Vec<u8>;
    type Error = Error;
    type SerializeSeq = Impossible<Vec<u8>, Error>;
    type SerializeTuple = Impossible<Vec<u8>, Error>;
    type SerializeTupleStruct = Impossible<Vec<u8>, Error>;
    type SerializeTupleVariant = Impossible<Vec<u8>, Error>;
    type SerializeMap = Impossible<Vec<u8>, Error>;
    type SerializeStruct = Fields;
    type SerializeStructVariant = Impossible<Vec<u8>, Error>;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Fields, Error> {
        // A typical stored object's size, so that it is rarely grown.
        let mut out = Vec::with_capacity(2048);
        out.push(b'{');
        Ok(Fields { out, early: Vec::new(), metadata: false })
    }
    fn serialize_bool(self, _: bool) -> Result<Vec<u8>, Error> {
        Err(not_an_object())
    }
    fn serialize_i8(self, _: i8) -> Result<Vec<u8>, Error> {
        Err(not_an_object())
    }
    fn serialize_i16(self, _: i16) -> Result<Vec<u8>, Error> {
        Err(not_an_object())
    }
    fn serialize_i32(self, _: i32) -> Result<Vec<u8>, Error> {
        Err(not_an_object())
    }
    fn serialize_i64(self, _: i64) -> Result<Vec<u8>, Error> {
        Err(not_an_object())
    }
    fn serialize_u8(self, _: u8) -> Result<Vec<u8>, Error> {
        Err(not_an_object())
    }
    fn serialize_u16(self, _: u16) -> Result<Vec<u8>, Error> {
        Err(not_an_object())
    }
    fn serialize_u32(self, _: u32) -> Result<Vec<u8>, Error> {
        Err(not_an_object())
    }
    fn serialize_u64(self, _: u64) -> Result<Vec<u8>, Error> {
        Err(not_an_object())
    }
    fn serialize_f32(self, _: f32) -> Result<Vec<u8>, Error> {
        Err(not_an_object())
    }
    fn serialize_f64(self, _: f64) -> Result<Vec<u8>, Error> {
        Err(not_an_object())
    }
    fn serialize_char(self, _: char) -> Result<Vec<u8>, Error> {
        Err(not_an_object())
    }
    fn serialize_str(self, _: &str) -> Result<Vec<u8>, Error> {
        Err(not_an_object())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<Vec<u8>, Error> {
        Err(not_an_object())
    }
    fn serialize_none(self) -> Result<Vec<u8>, Error> {
        Err(not_an_object())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<Vec<u8>, Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Vec<u8>, Error> {
        Err(not_an_object())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Vec<u8>, Error> {
        Err(not_an_object())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<Vec<u8>, Error> {
        Err(not_an_object())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> Result<Vec<u8>, Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Vec<u8>, Error> {
        Err(not_an_object())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(not_an_object())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(not_an_object())
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, Error> {
        Err(not_an_object())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(not_an_object())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(not_an_object())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(not_an_object())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_engine::k8s_openapi::api::core::v1::{Event, Pod};
    use serde_json::{json, Value};

    #[test]
    fn the_head_leads_and_the_object_is_unchanged() {
        let event: Event = serde_json::from_value(json!({"metadata": {"name": "e", "namespace": "ns"},
            "involvedObject": {"kind": "Pod", "name": "web"}, "reason": "Scheduled", "count": 1}))
        .unwrap();
        let bytes = encode(&event).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(r#"{"apiVersion":"v1","kind":"Event","metadata":{"#), "{text}");
        let decoded: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(decoded, serde_json::to_value(&event).unwrap());

        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Pending"}}))
        .unwrap();
        let bytes = encode(&pod).unwrap();
        // The layout a value encoding gives, for a pod whose type orders its fields by name.
        assert_eq!(bytes, crate::object::encode(&serde_json::to_value(&pod).unwrap()));
        assert!(encode(&"not an object").is_err());
    }
}
