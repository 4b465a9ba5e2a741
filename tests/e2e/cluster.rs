//! The fault scenarios on a 3-node cluster with R3 streams and three partitions (see
//! [`crate::faults`] for the rest). They are the longest tests of the suite — recovery from a
//! lost node waits out ack windows — so they live in a module whose name sorts early: libtest starts
//! tests in name order, and a long test started last would set the suite's wall time alone.

use testkit::faults::Fault;

use crate::faults::holds_under;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invariants_hold_on_a_three_node_cluster_with_r3_streams_while_nodes_restart() {
    holds_under(Fault::ClusterRestarts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invariants_hold_on_the_cluster_with_the_default_consumer_settings() {
    holds_under(Fault::ClusterRestartsDefaults).await;
}
