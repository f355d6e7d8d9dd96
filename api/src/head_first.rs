//! A typed object encoded in the stored layout ([`crate::object`]): `apiVersion`,
//! `kind` and `metadata` first, the other top-level fields after them in the order
//! the type serializes them, without going through a `serde_json::Value`.
//!
//! Kinds serialize `apiVersion` and `kind` first but `metadata` among the rest in
//! name order (an Event's `involvedObject` comes before it), so a field that comes
//! before `metadata` waits in a second buffer until `metadata` is written. Below the top
//! level, the type's own order stands: k8s-openapi's generated types keep fields in
//! name order, so the bytes are mostly (not necessarily) those of the value encoding;
//! readers must not rely on more than the head (see `binding`).

use crate::serde_methods::methods;
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

    methods!(Err(not_an_object()); serialize_bool serialize_i8 serialize_i16 serialize_i32 serialize_i64 serialize_u8
        serialize_u16 serialize_u32 serialize_u64 serialize_f32 serialize_f64 serialize_char serialize_str
        serialize_bytes serialize_none serialize_unit serialize_unit_struct serialize_unit_variant
        serialize_newtype_variant serialize_seq serialize_tuple serialize_tuple_struct serialize_tuple_variant
        serialize_map serialize_struct_variant);

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Fields, Error> {
        // A typical stored object's size, so that it is rarely grown.
        let mut out = Vec::with_capacity(2048);
        out.push(b'{');
        Ok(Fields { out, early: Vec::new(), metadata: false })
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<Vec<u8>, Error> {
        value.serialize(self)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> Result<Vec<u8>, Error> {
        value.serialize(self)
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
