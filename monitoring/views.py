from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render

from portal.errors import NotFound

from . import selectors
from .choices import Window
from .figures import chart_figure, has_data


@login_required
def dashboard(request):
    """Metrics of one endpoint, or of one target model on it, over a chosen window."""
    try:
        board = selectors.dashboard_get(
            endpoint_name=request.GET.get("endpoint", ""),
            target_model=request.GET.get("model", ""),
            window=request.GET.get("window", Window.HOUR),
        )
    except NotFound as exc:
        raise Http404(exc.message) from exc
    charts = [
        {
            "key": chart.key,
            "dom_id": f"figure-{chart.key}",
            "title": chart.title,
            "figure": chart_figure(chart, series, start=board.start, end=board.end),
            "has_data": has_data(series),
        }
        for chart, series in board.charts
    ]
    # htmx refreshes only the charts.
    partial = bool(request.headers.get("HX-Request"))
    template = "monitoring/_charts.html" if partial else "monitoring/dashboard.html"
    return render(
        request,
        template,
        {
            "nav_section": "dashboards",
            "board": board,
            "charts": charts,
            "windows": Window.choices,
        },
    )
