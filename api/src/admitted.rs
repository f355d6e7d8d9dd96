//! An object its kind's codec admitted, on its way to storage.
//!
//! The codec decodes into the kind's Rust type, defaults and validates it there. A
//! create keeps it in that form for what follows (its managed fields, the pod
//! admission plugins, the encoding of the bytes to store), so no `serde_json::Value`
//! tree is built, walked and dropped for it: in a profile of the pod-create bench
//! those were about a third of the samples. A step that only knows JSON (LimitRanger,
//! PodSecurity and ResourceQuota when the namespace has any, RBAC escalation,
//! NodeRestriction, an update's merge) asks for [`Admitted::value`], which converts
//! once; from then on the object is a value, unless a step that needs the type asks
//! for it back ([`Admitted::typed_as`], as the pod admission plugins do).

use crate::apply::types::Types;
use crate::apply::{typed, Writer};
use crate::{head_first, object};
use keelson_engine::k8s_openapi;
use keelson_engine::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use keelson_engine::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use std::any::Any;

/// An admitted object: typed, or (once a step needed one) a JSON value.
pub enum Admitted {
    Typed(Box<dyn TypedObject>),
    Value(Value),
}

/// What the create path does with an object in its Rust type.
pub trait TypedObject: Any + Send + Sync {
    /// The object as a JSON value.
    fn to_value(&self) -> Result<Value, serde_json::Error>;
    /// The object's stored bytes ([`head_first::encode`]).
    fn encode(&self) -> Result<Vec<u8>, serde_json::Error>;
    /// The fields a create by `writer` sets ([`typed::create_fields_v1`]).
    fn create_fields_v1(
        &self,
        types: &Types,
        definition: &str,
        writer: &Writer<'_>,
    ) -> Result<Map<String, Value>, serde_json::Error>;
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T> TypedObject for T
where
    T: Serialize + k8s_openapi::Metadata<Ty = ObjectMeta> + Send + Sync + 'static,
{
    fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }

    fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        head_first::encode(self)
    }

    fn create_fields_v1(
        &self,
        types: &Types,
        definition: &str,
        writer: &Writer<'_>,
    ) -> Result<Map<String, Value>, serde_json::Error> {
        typed::create_fields_v1(types, definition, writer, self)
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        k8s_openapi::Metadata::metadata_mut(self)
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl Admitted {
    pub fn typed<T: TypedObject>(object: T) -> Admitted {
        Admitted::Typed(Box::new(object))
    }

    /// The object as a JSON value, converted (once) if it is typed.
    pub fn value(&mut self) -> Result<&mut Value, ApiError> {
        if let Admitted::Typed(object) = self {
            *self = Admitted::Value(object.to_value().map_err(ApiError::internal)?);
        }
        match self {
            Admitted::Value(value) => Ok(value),
            Admitted::Typed(_) => unreachable!("converted above"),
        }
    }

    pub fn into_value(mut self) -> Result<Value, ApiError> {
        self.value()?;
        match self {
            Admitted::Value(value) => Ok(value),
            Admitted::Typed(_) => unreachable!("converted above"),
        }
    }

    /// The object as a `T` (its kind's type), decoded again if a step had turned it
    /// into a value.
    pub fn typed_as<T: TypedObject + DeserializeOwned>(&mut self) -> Result<&mut T, ApiError> {
        let is_t = match self {
            Admitted::Typed(object) => object.as_any_mut().is::<T>(),
            Admitted::Value(_) => false,
        };
        if !is_t {
            let decoded = T::deserialize(&*self.value()?).map_err(ApiError::internal)?;
            *self = Admitted::typed(decoded);
        }
        match self {
            Admitted::Typed(object) => Ok(object.as_any_mut().downcast_mut().expect("made a T above")),
            Admitted::Value(_) => unreachable!("made typed above"),
        }
    }

    /// The object's stored bytes, in the layout of [`object::encode`].
    pub fn encode(&mut self) -> Result<Vec<u8>, ApiError> {
        if let Admitted::Typed(object) = self {
            if let Ok(bytes) = object.encode() {
                return Ok(bytes);
            }
        }
        Ok(object::encode(self.value()?))
    }
}

/// An object read as a JSON value by a step that only knows JSON: a value already is
/// one; an [`Admitted`] object converts when (and only when) the step reads it.
pub trait AsValue {
    fn as_value(&mut self) -> Result<&Value, ApiError>;
}

impl AsValue for Value {
    fn as_value(&mut self) -> Result<&Value, ApiError> {
        Ok(self)
    }
}

impl AsValue for Admitted {
    fn as_value(&mut self) -> Result<&Value, ApiError> {
        self.value().map(|value| &*value)
    }
}
