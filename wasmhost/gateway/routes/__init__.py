"""The gateway's routers, one module per audience or resource."""
