//! The inventory model: what an agent reports and what the aggregator links, stores and serves.

mod attr_map;
mod id;
mod link;
mod net;
mod object;
mod object_type;
mod timestamp;
mod value;

pub use attr_map::AttrMap;
/// The string type of names, hosts and attribute text: inline up to 24 bytes.
pub use compact_str::{CompactString, ToCompactString, format_compact};
pub use id::ObjectId;
pub use link::{Link, LinkState, LinkType, ParseLinkTypeError};
pub use net::{IpPrefix, MacAddress, ParseNetError};
pub use object::{Attributes, Object, ParentRef, Status, StatusLevel};
pub use object_type::{ObjectType, UnknownObjectType};
pub use timestamp::Timestamp;
pub use value::AttrValue;
