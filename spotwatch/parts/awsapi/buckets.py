"""Which throttling bucket an AWS API action draws its tokens from.

A client's calls wait in one line per bucket, each with its own pacer
(spotwatch.parts.awsapi.callline), because a throttled answer says something about that bucket
only. ECS groups its actions into categories that share a bucket per account and Region
("Request throttling for the Amazon ECS API", the table "Request Token Bucket Sizes and
Refill Rates"; docs/aws-facts.md): StopTask and UpdateContainerInstancesState draw from one
bucket, ListTasks and DescribeTasks from another. Actions of other services, and ECS actions
not listed here, are taken to have a bucket each.
"""

from __future__ import annotations

from typing import Dict, Tuple

# ECS category -> its actions (as boto3 names them). In the comments: the category's bucket
# maximum capacity (burst) and refill rate per second (sustained), the same in every Region.
_ECS_CATEGORIES: Dict[str, Tuple[str, ...]] = {
    "cluster resource modify": (  # 100, 40/s
        "delete_attributes",
        "deregister_container_instance",
        "execute_command",
        "put_attributes",
        "run_task",
        "start_task",
        "stop_task",
        "update_container_agent",
        "update_container_instances_state",
    ),
    "cluster resource read": (  # 100, 20/s
        "describe_container_instances",
        "describe_tasks",
        "list_attributes",
        "list_container_instances",
        "list_tasks",
    ),
    "cluster read": ("describe_clusters", "list_clusters"),  # 50, 20/s
    "service read": ("describe_services", "list_services"),  # 100, 20/s
    "task protection": ("get_task_protection", "update_task_protection"),  # 200, 80/s
}
ECS_BUCKETS: Dict[str, str] = {
    action: category for category, actions in _ECS_CATEGORIES.items() for action in actions
}


def bucket_of(service: str, operation: str) -> str:
    """The bucket `operation` of `service` draws from, named for the line it waits in."""
    if service == "ecs":
        return ECS_BUCKETS.get(operation, operation)
    return operation
