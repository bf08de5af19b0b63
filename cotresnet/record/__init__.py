"""The record of a job's flows: their clock (flow time per step), their running totals and statuses (one
update per step for every member), their certificates. No Lightning."""
from .certificate import Certificate
from .clock import flow_time_step, learning_rate
from .flow import FlowRecord

__all__ = ["Certificate", "FlowRecord", "flow_time_step", "learning_rate"]
