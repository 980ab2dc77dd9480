"""Context every page's layout needs."""

NAVIGATION = [
    ("Models", "registry:model-list", "registry"),
    ("Endpoints", "deployments:endpoint-list", "endpoints"),
    ("Deployments", "deployments:deployment-list", "deployments"),
    ("Approvals", "deployments:promotion-list", "approvals"),
    ("Dashboards", "monitoring:dashboard", "dashboards"),
]


def navigation(request):
    return {"navigation": NAVIGATION}
