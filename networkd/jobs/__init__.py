"""Leader jobs (SPEC section 5): run by the elector only while this node is the leader.

Each job is a pure function from bus state to the etcd keys it should hold
(``outputs.JobResult``); ``runner.JobRunner`` writes them with read-compare-write, fenced
by the leader key, so a job's write can never land after leadership was lost.
"""
