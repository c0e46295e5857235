//! The one mapping from a state-store failure to a gRPC status, for every control-plane service
//! (policy, billing, the prober): the store out of reach is UNAVAILABLE (a client may retry, or
//! another replica may answer), stored data that cannot be read is INTERNAL naming the key.

use switchyard_state::StateError;
use tonic::Status;

/// `e` as the status a gRPC caller gets.
pub fn state_status(e: StateError) -> Status {
    match e {
        StateError::Unavailable(_) => Status::unavailable(e.to_string()),
        StateError::Corrupt { .. } => Status::internal(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_is_unavailable_and_corrupt_is_internal() {
        let s = state_status(StateError::Unavailable("refused".into()));
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(s.message(), "state store unavailable: refused");
        let s = state_status(StateError::Corrupt {
            key: "sy:x".into(),
            detail: "not json".into(),
        });
        assert_eq!(s.code(), tonic::Code::Internal);
        assert!(s.message().contains("sy:x"), "{}", s.message());
    }
}
