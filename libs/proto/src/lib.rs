//! Protobuf messages and gRPC stubs for every Switchyard service, generated at build time from
//! `proto/switchyard/v1`. This crate owns the wire contract only: no logic, no conversions to the
//! domain types (those live with the code that needs them).

/// `switchyard.v1`: Router, Policy, Billing and Health services and their messages.
#[allow(clippy::all, clippy::unwrap_used, clippy::expect_used, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/switchyard.v1.rs"));
}

/// The encoded `FileDescriptorSet` of every Switchyard proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/switchyard_descriptor.bin"));

/// Fully qualified names of the services this crate defines.
pub const SERVICE_NAMES: [&str; 4] = [
    "switchyard.v1.Router",
    "switchyard.v1.Policy",
    "switchyard.v1.Billing",
    "switchyard.v1.Health",
];

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn descriptor_set_holds_every_service() {
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let mut services: Vec<String> = fds
            .file
            .iter()
            .flat_map(|f| {
                let package = f.package().to_string();
                f.service
                    .iter()
                    .map(move |s| format!("{package}.{}", s.name()))
            })
            .collect();
        services.sort();
        let mut expected: Vec<String> = SERVICE_NAMES.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(services, expected);
    }

    #[test]
    fn messages_round_trip() {
        let req = v1::ChatRequest {
            model: "m".into(),
            max_tokens: Some(5),
            messages: vec![v1::Message {
                role: v1::Role::User as i32,
                content: vec![v1::ContentPart {
                    part: Some(v1::content_part::Part::Text("hi".into())),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        assert_eq!(v1::ChatRequest::decode(bytes.as_slice()).unwrap(), req);
    }
}
