//! `serde::Serializer` methods that all answer the same way, written once.
//!
//! The crate's special-purpose serializers (the typed managed-fields walk, the stored
//! layout's top level, a map key) each handle one or two shapes of value and answer
//! every other the same: as a leaf, or with an error. `methods!(BODY; NAME...)` writes
//! the named `Serializer` methods with their signatures and `BODY` as each one's value
//! (their arguments unused).

macro_rules! methods {
    ($body:expr; $($method:ident)*) => {
        $( $crate::serde_methods::methods!(@ $method $body); )*
    };
    (@ serialize_bool $body:expr) => { fn serialize_bool(self, _: bool) -> Result<Self::Ok, Self::Error> { $body } };
    (@ serialize_i8 $body:expr) => { fn serialize_i8(self, _: i8) -> Result<Self::Ok, Self::Error> { $body } };
    (@ serialize_i16 $body:expr) => { fn serialize_i16(self, _: i16) -> Result<Self::Ok, Self::Error> { $body } };
    (@ serialize_i32 $body:expr) => { fn serialize_i32(self, _: i32) -> Result<Self::Ok, Self::Error> { $body } };
    (@ serialize_i64 $body:expr) => { fn serialize_i64(self, _: i64) -> Result<Self::Ok, Self::Error> { $body } };
    (@ serialize_u8 $body:expr) => { fn serialize_u8(self, _: u8) -> Result<Self::Ok, Self::Error> { $body } };
    (@ serialize_u16 $body:expr) => { fn serialize_u16(self, _: u16) -> Result<Self::Ok, Self::Error> { $body } };
    (@ serialize_u32 $body:expr) => { fn serialize_u32(self, _: u32) -> Result<Self::Ok, Self::Error> { $body } };
    (@ serialize_u64 $body:expr) => { fn serialize_u64(self, _: u64) -> Result<Self::Ok, Self::Error> { $body } };
    (@ serialize_f32 $body:expr) => { fn serialize_f32(self, _: f32) -> Result<Self::Ok, Self::Error> { $body } };
    (@ serialize_f64 $body:expr) => { fn serialize_f64(self, _: f64) -> Result<Self::Ok, Self::Error> { $body } };
    (@ serialize_char $body:expr) => { fn serialize_char(self, _: char) -> Result<Self::Ok, Self::Error> { $body } };
    (@ serialize_str $body:expr) => { fn serialize_str(self, _: &str) -> Result<Self::Ok, Self::Error> { $body } };
    (@ serialize_bytes $body:expr) => { fn serialize_bytes(self, _: &[u8]) -> Result<Self::Ok, Self::Error> { $body } };
    (@ serialize_none $body:expr) => { fn serialize_none(self) -> Result<Self::Ok, Self::Error> { $body } };
    (@ serialize_some $body:expr) => {
        fn serialize_some<T: ?Sized + serde::Serialize>(self, _: &T) -> Result<Self::Ok, Self::Error> { $body }
    };
    (@ serialize_unit $body:expr) => { fn serialize_unit(self) -> Result<Self::Ok, Self::Error> { $body } };
    (@ serialize_unit_struct $body:expr) => {
        fn serialize_unit_struct(self, _: &'static str) -> Result<Self::Ok, Self::Error> { $body }
    };
    (@ serialize_unit_variant $body:expr) => {
        fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<Self::Ok, Self::Error> {
            $body
        }
    };
    (@ serialize_newtype_variant $body:expr) => {
        fn serialize_newtype_variant<T: ?Sized + serde::Serialize>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<Self::Ok, Self::Error> {
            $body
        }
    };
    (@ serialize_seq $body:expr) => {
        fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Self::Error> { $body }
    };
    (@ serialize_tuple $body:expr) => {
        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Self::Error> { $body }
    };
    (@ serialize_tuple_struct $body:expr) => {
        fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, Self::Error> {
            $body
        }
    };
    (@ serialize_tuple_variant $body:expr) => {
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, Self::Error> {
            $body
        }
    };
    (@ serialize_map $body:expr) => {
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Self::Error> { $body }
    };
    (@ serialize_struct $body:expr) => {
        fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Self::Error> { $body }
    };
    (@ serialize_struct_variant $body:expr) => {
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, Self::Error> {
            $body
        }
    };
}

pub(crate) use methods;
