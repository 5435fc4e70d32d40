//! The vocabulary every other module speaks: validated ids, sync units,
//! revisions, ordinals, actions and operations. Pure data; no storage here.

mod ids;
mod input_text;
mod operation;

pub use ids::{
    ActionId, ActionType, Branch, DocumentId, DocumentType, Ordinal, Revision, Scope, SyncUnit,
    MAX_ID_LEN,
};
pub(crate) use operation::domain_key;
pub use operation::{
    Action, Digest, NewOperation, Operation, OperationContext, OperationId, OperationWithContext,
};
