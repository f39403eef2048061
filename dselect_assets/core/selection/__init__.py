"""Selection stage: the samplers that choose documents, the paper's configurations, and a selection's export."""
