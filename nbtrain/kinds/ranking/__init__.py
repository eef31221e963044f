"""The ranking kinds: graded relevance per query (pipeline, bundle) and implicit feedback
(interactions, interactions_bundle), their data sources (data), matrix factorisation (models), the
classical recommenders (recommenders) and full-ranking evaluation (retrieval). Imports nothing
until one of them is used."""
