"""toolenv's envs in other trainers: TRL (:mod:`toolenv.integrations.trl`), and the one reward-export convention they share.

Every consumer gets the same three things from an episode, under the same names
(:func:`toolenv.integrations.export.episode_report`): the reward terms summed over the episode
(``terms``), the hindsight step rewards (``step_rewards``, when the env gives them), and the episode
metrics (``success``, ``return``, ``num_tool_calls``, ``num_format_errors``, ``turns``, ``terminated``). Nothing
is reduced to one scalar where the consumer can carry more; README's "Trainers" section maps
each field to each consumer.
"""
