"""Which throttling bucket an action's calls wait in line for (spotwatch.parts.awsapi.buckets):
ECS shares one bucket among the actions of a category, as AWS documents it."""

from __future__ import annotations

from spotwatch.parts.awsapi.buckets import bucket_of


def test_stop_task_shares_its_bucket_with_the_drain_and_not_with_the_reads() -> None:
    stop = bucket_of("ecs", "stop_task")
    assert bucket_of("ecs", "update_container_instances_state") == stop
    assert bucket_of("ecs", "list_tasks") == bucket_of("ecs", "describe_tasks") != stop


def test_other_actions_and_services_have_a_bucket_each() -> None:
    assert bucket_of("ecs", "create_service") == "create_service"
    assert bucket_of("elbv2", "deregister_targets") != bucket_of("elbv2", "describe_target_health")
    assert bucket_of("autoscaling", "describe_auto_scaling_groups") == (
        "describe_auto_scaling_groups"
    )
