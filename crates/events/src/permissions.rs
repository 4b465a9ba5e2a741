//! What each service may do on NATS, derived from the layout ([`crate::layout`]) and the wiring
//! ([`crate::topology`]), so that the shipped permissions cannot drift from what the services
//! do: `deploy/nats/permissions.conf` is [`nats_authorization`] for one partition, checked by a
//! test (`ORDERFLOW_BLESS=1` rewrites it), and `cargo run -p events --example
//! nats-permissions -- <partitions>` prints it for a partitioned deployment.
//!
//! Least privilege, per service: publish the events it writes, dead letters under the names
//! of its own consumers, its own KV buckets, acks of its own consumers; call the JetStream API
//! only to read its own streams and buckets, to bind to, pull from and ack its own durable
//! consumers and their advisory watchers, and to check that the streams it uses exist; and
//! receive replies only under its own inbox prefix ([`names::inbox_prefix`]). No service may
//! create, update, delete or purge a stream, a bucket or a consumer: the provisioning step
//! does that with the operator's rights.

use std::fmt::Write as _;

use crate::layout::{self, Domain, Partitions};
use crate::names;
use crate::topology::{self, ServiceId};

/// One service's NATS user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The user name: the service's name.
    pub user: &'static str,
    /// The server's environment variable that holds the password (`ORDER_PASSWORD`, …).
    pub password_variable: String,
    /// Subjects it may publish to (JetStream API calls are publishes).
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

/// The user of each service, for `partitions` partitions.
pub fn grants(partitions: Partitions) -> Vec<Grant> {
    ServiceId::ALL
        .into_iter()
        .map(|service| grant(service, service.subscriptions(), partitions))
        .collect()
}

/// The grant of `service`, which consumes through `subscriptions`.
fn grant<'a>(
    service: ServiceId,
    subscriptions: impl Iterator<Item = &'a topology::Subscription>,
    partitions: Partitions,
) -> Grant {
    let writes = service.writes();
    let mut publish: Vec<String> = crate::EventKind::ALL
        .into_iter()
        .filter(|kind| Domain::of(*kind) == writes)
        .map(layout::any_partition)
        .collect();
    let reads: Vec<(&str, Domain)> = subscriptions
        .filter_map(|subscription| Some((subscription.durable, subscription.domain()?)))
        .collect();
    // Dead letters under its own consumers' names only: the subject is the proof of origin.
    for (durable, _) in &reads {
        publish.push(names::subject::dead_letters_of(durable));
    }
    for bucket in service.buckets() {
        publish.push(format!("$KV.{bucket}.>"));
    }
    publish.push("$JS.API.INFO".to_owned());

    // Its own streams and buckets: check and read them — never create, update, delete or
    // purge them: that is the provisioning step's (the operator's) right alone.
    let mut owned: Vec<String> = partitions
        .all()
        .map(|p| writes.stream(p, partitions))
        .collect();
    if service.owns_support_streams() {
        owned.extend(names::stream::SUPPORT.iter().map(|(s, _)| (*s).to_owned()));
    }
    let buckets: Vec<String> = service
        .buckets()
        .iter()
        .map(|b| names::bucket::stream(b))
        .collect();
    for stream in owned.iter().chain(&buckets) {
        for call in ["STREAM.INFO", "STREAM.MSG.GET"] {
            publish.push(format!("$JS.API.{call}.{stream}"));
        }
        publish.push(format!("$JS.API.DIRECT.GET.{stream}"));
        publish.push(format!("$JS.API.DIRECT.GET.{stream}.>"));
    }
    if service.owns_support_streams() {
        // Redriven or discarded dead letters are removed one by one (admin API).
        publish.push(format!("$JS.API.STREAM.MSG.DELETE.{}", names::stream::DLQ));
    } else {
        for (stream, _) in names::stream::SUPPORT {
            publish.push(format!("$JS.API.STREAM.INFO.{stream}"));
        }
    }

    // Its durable consumers on the streams it reads, and their advisory watchers.
    for (durable, reads) in reads {
        for p in partitions.all() {
            let stream = reads.stream(p, partitions);
            if reads != writes {
                publish.push(format!("$JS.API.STREAM.INFO.{stream}"));
                // The message an advisory names is fetched to be dead-lettered.
                publish.push(format!("$JS.API.STREAM.MSG.GET.{stream}"));
                publish.push(format!("$JS.API.DIRECT.GET.{stream}"));
            }
            publish.extend(consumer_calls(&stream, durable));
            let watcher = names::durable::max_deliveries_watcher(durable, &stream);
            publish.extend(consumer_calls(names::stream::ADVISORIES, &watcher));
        }
    }
    // Two consumers on one stream need the same calls on it: grant (and import) each once.
    let mut granted = std::collections::HashSet::new();
    publish.retain(|subject| granted.insert(subject.clone()));
    Grant {
        user: service.name(),
        password_variable: password_variable(service.name()),
        publish,
        subscribe: vec![format!("{}.>", names::inbox_prefix(service.name()))],
    }
}

/// Read, pull from and ack one durable consumer — never create or update it: its deliver
/// subject, were it a push consumer, would have the server publish wherever it names.
fn consumer_calls(stream: &str, durable: &str) -> [String; 3] {
    [
        format!("$JS.API.CONSUMER.INFO.{stream}.{durable}"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"),
        format!("$JS.ACK.{stream}.{durable}.>"),
    ]
}

/// `order-service` → `ORDER_PASSWORD`.
fn password_variable(service: &str) -> String {
    let base = service.strip_suffix("-service").unwrap_or(service);
    format!("{}_PASSWORD", base.to_uppercase().replace('-', "_"))
}

/// The account that holds every stream and bucket, and the operator's user.
pub const DATA_ACCOUNT: &str = "ORDERFLOW";

/// The prefix under which each service's account imports the JetStream API (and its KV
/// writes): what `NATS_JS_API_PREFIX` must say in a service's settings.
pub const IMPORTED_API_PREFIX: &str = "JS.ORDERFLOW.API";

/// `order-service` → `ORDER`: the account of a service.
pub fn account_of(service: &str) -> String {
    let base = service.strip_suffix("-service").unwrap_or(service);
    base.to_uppercase().replace('-', "_")
}

/// Whether answering `subject` may take several messages (a pull's batch, a multi-last get).
fn streams_responses(subject: &str) -> bool {
    subject.starts_with("$JS.API.CONSUMER.MSG.NEXT.") || subject.starts_with("$JS.API.DIRECT.GET.")
}

/// Where an importing service's account reaches `subject`: JetStream API calls and KV writes
/// under [`IMPORTED_API_PREFIX`] (the client's JetStream context adds it), the rest as is.
fn imported_as(subject: &str) -> String {
    if let Some(call) = subject.strip_prefix("$JS.API.") {
        format!("{IMPORTED_API_PREFIX}.{call}")
    } else if subject.starts_with("$KV.") {
        format!("{IMPORTED_API_PREFIX}.{subject}")
    } else {
        subject.to_owned()
    }
}

/// The `accounts` block of a nats-server configuration, for `partitions` partitions: the
/// streams and buckets live in [`DATA_ACCOUNT`] (with the [`OPERATOR`]), and each service in
/// an account of its own, which imports exactly its [`Grant`] as *services*. A service import
/// rewrites the reply subject of every request, so JetStream's answers go back to the
/// requester only — within one account they would go wherever a request's reply subject
/// named, past every user permission (an event subject, a KV key, a JetStream API call).
/// Passwords are `$<SERVICE>_PASSWORD` variables from the server's environment.
pub fn nats_accounts(partitions: Partitions) -> String {
    let grants = grants(partitions);
    // Each subject exported once, to every account that imports it.
    let mut exports: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for grant in &grants {
        for subject in &grant.publish {
            exports
                .entry(subject.as_str())
                .or_default()
                .push(account_of(grant.user));
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# NATS accounts, one per service, for {} partition(s) — generated from crates/events\n\
         # (permissions.rs, layout.rs, topology.rs): do not edit. Regenerate with\n\
         # `ORDERFLOW_BLESS=1 cargo test -p events`, or for another partition count with\n\
         # `cargo run -p events --example nats-permissions -- <partitions>`.\n\
         # The streams live in {DATA_ACCOUNT}; each service's account imports exactly what it may\n\
         # do there (its services reach the JetStream API with NATS_JS_API_PREFIX={IMPORTED_API_PREFIX}).\n\
         # Each password comes from the server's environment; include this file from nats.conf.",
        partitions.count()
    );
    out.push_str("accounts {\n");
    let _ = writeln!(out, "  {DATA_ACCOUNT}: {{");
    let _ = writeln!(out, "    jetstream: enabled");
    let _ = writeln!(
        out,
        "    # Operators: orderflow-admin (provisioning), the `nats` CLI, redrives of any service."
    );
    let _ = writeln!(
        out,
        "    users: [ {{ user: {OPERATOR}, password: ${} }} ]",
        password_variable(OPERATOR)
    );
    let _ = writeln!(out, "    exports: [");
    for (subject, accounts) in &exports {
        let response = if streams_responses(subject) {
            ", response_type: stream"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "      {{ service: {subject:?}, accounts: [{}]{response} }}",
            accounts.join(", ")
        );
    }
    let _ = writeln!(out, "    ]");
    let _ = writeln!(out, "  }}");
    for grant in &grants {
        let _ = writeln!(out, "  {}: {{", account_of(grant.user));
        let _ = writeln!(
            out,
            "    users: [ {{ user: {}, password: ${} }} ]",
            grant.user, grant.password_variable
        );
        let _ = writeln!(out, "    imports: [");
        for subject in &grant.publish {
            let to = imported_as(subject);
            let mapping = if to == *subject {
                String::new()
            } else {
                format!(", to: {to:?}")
            };
            let _ = writeln!(
                out,
                "      {{ service: {{ account: {DATA_ACCOUNT}, subject: {subject:?} }}{mapping} }}"
            );
        }
        let _ = writeln!(out, "    ]");
        let _ = writeln!(out, "  }}");
    }
    out.push_str("}\n");
    out
}

/// The user for people operating the system (all permissions), with `$OPERATOR_PASSWORD`.
pub const OPERATOR: &str = "operator";

#[cfg(test)]
mod tests {
    use super::*;

    fn grant_of(service: ServiceId) -> Grant {
        grants(Partitions::ONE)
            .into_iter()
            .find(|g| g.user == service.name())
            .unwrap()
    }

    #[test]
    fn a_service_publishes_only_the_events_of_its_own_domain() {
        let inventory = grant_of(ServiceId::Inventory);
        assert!(
            inventory
                .publish
                .contains(&"inventory.*.*.*.reserved".to_owned())
        );
        assert!(!inventory.publish.iter().any(|s| s.starts_with("orders.")));
        assert!(
            !inventory
                .publish
                .iter()
                .any(|s| s.contains('>') && !s.contains('.'))
        );
    }

    #[test]
    fn no_service_may_call_the_whole_jetstream_api_or_delete_a_stream() {
        for grant in grants(Partitions::new(3).unwrap()) {
            for subject in &grant.publish {
                assert!(
                    !matches!(subject.as_str(), "$JS.API.>" | "$JS.>" | ">" | "$KV.>"),
                    "{}: {subject}",
                    grant.user
                );
                assert!(!subject.contains("STREAM.DELETE"), "{subject}");
                assert!(!subject.contains("STREAM.PURGE"), "{subject}");
            }
        }
    }

    #[test]
    fn no_service_may_create_or_change_a_stream_a_bucket_or_a_consumer() {
        for grant in grants(Partitions::new(2).unwrap()) {
            for subject in &grant.publish {
                for call in [
                    "STREAM.CREATE",
                    "STREAM.UPDATE",
                    "STREAM.DELETE",
                    "STREAM.PURGE",
                    "STREAM.SNAPSHOT",
                    "STREAM.RESTORE",
                    "CONSUMER.CREATE",
                    "CONSUMER.DURABLE.CREATE",
                    "CONSUMER.DELETE",
                    "CONSUMER.PAUSE",
                ] {
                    assert!(
                        !subject.contains(&format!("$JS.API.{call}")),
                        "{} may call {subject}",
                        grant.user
                    );
                }
            }
        }
    }

    #[test]
    fn on_the_stream_it_writes_a_service_may_touch_only_its_own_archive_consumer() {
        let order = grant_of(ServiceId::Order);
        let on_orders: Vec<&String> = order
            .publish
            .iter()
            .filter(|s| s.starts_with("$JS.API.CONSUMER.") && s.contains(".ORDERS."))
            .collect();
        assert!(!on_orders.is_empty());
        for call in on_orders {
            assert!(
                call.contains(".ORDERS.order-archive"),
                "order-service could touch another consumer on ORDERS: {call}"
            );
            assert!(!call.contains("DELETE"), "{call}");
        }
    }

    #[test]
    fn no_subject_is_granted_twice_even_to_a_service_with_two_consumers_on_one_stream() {
        for grant in grants(Partitions::new(2).unwrap()) {
            let mut seen = std::collections::HashSet::new();
            for subject in &grant.publish {
                assert!(seen.insert(subject), "{}: {subject} twice", grant.user);
            }
        }
        // A second consumer of inventory's events beside the saga's.
        static RELEASES: topology::Subscription = topology::Subscription {
            durable: "order-releases",
            kinds: &[crate::EventKind::InventoryReleased],
            ..topology::ORDER_SAGA
        };
        let order = ServiceId::Order;
        let subscriptions = order.subscriptions().chain([&RELEASES]);
        let grant = grant(order, subscriptions, Partitions::ONE);
        let mut seen = std::collections::HashSet::new();
        for subject in &grant.publish {
            assert!(seen.insert(subject), "{subject} twice");
        }
        let next = "$JS.API.CONSUMER.MSG.NEXT.INVENTORY.order-releases".to_owned();
        assert!(grant.publish.contains(&next));
    }

    #[test]
    fn operators_have_their_own_user_in_the_account_that_holds_the_streams() {
        let conf = nats_accounts(Partitions::ONE);
        assert!(conf.contains("ORDERFLOW: {\n    jetstream: enabled"));
        assert!(conf.contains("users: [ { user: operator, password: $OPERATOR_PASSWORD } ]"));
    }

    #[test]
    fn each_service_imports_only_its_grant_and_the_api_under_the_prefix() {
        let conf = nats_accounts(Partitions::ONE);
        assert!(conf.contains(
            r#"{ service: { account: ORDERFLOW, subject: "$JS.API.DIRECT.GET.INVENTORY" }, to: "JS.ORDERFLOW.API.DIRECT.GET.INVENTORY" }"#
        ));
        assert!(conf.contains(
            r#"{ service: { account: ORDERFLOW, subject: "$KV.stock.>" }, to: "JS.ORDERFLOW.API.$KV.stock.>" }"#
        ));
        assert!(conf.contains(
            r#"{ service: "$JS.API.CONSUMER.MSG.NEXT.ORDERS.inventory", accounts: [INVENTORY], response_type: stream }"#
        ));
        // An event subject is exported to its writer's account alone.
        assert!(conf.contains(r#"{ service: "orders.*.*.*.created", accounts: [ORDER] }"#));
    }

    #[test]
    fn each_service_receives_replies_under_its_own_prefix_only() {
        assert_eq!(
            grant_of(ServiceId::Order).subscribe,
            ["_INBOX_order-service.>"]
        );
    }

    #[test]
    fn partitions_grant_a_consumer_and_a_watcher_per_partition_stream() {
        let grant = grants(Partitions::new(2).unwrap())
            .into_iter()
            .find(|g| g.user == ServiceId::Inventory.name())
            .unwrap();
        for stream in ["ORDERS_0", "ORDERS_1"] {
            assert!(
                grant
                    .publish
                    .contains(&format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.inventory"))
            );
            assert!(grant.publish.contains(&format!(
                "$JS.API.CONSUMER.MSG.NEXT.ADVISORIES.inventory-{stream}-max-deliveries"
            )));
        }
        assert!(
            grant
                .publish
                .contains(&"$JS.API.DIRECT.GET.INVENTORY_1".to_owned())
        );
    }

    #[test]
    fn the_shipped_permissions_file_is_the_generated_one() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/nats/permissions.conf"
        );
        let generated = nats_accounts(Partitions::ONE);
        if std::env::var_os("ORDERFLOW_BLESS").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let shipped = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            shipped == generated,
            "deploy/nats/permissions.conf is stale: run `ORDERFLOW_BLESS=1 cargo test -p events`"
        );
    }
}
