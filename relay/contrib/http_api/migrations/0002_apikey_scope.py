"""API keys get a scope: what they may do (send, read presence) and to which client ids.

Keys that exist keep what they could do before (send and presence, any id); new keys
may only send unless given more.
"""

from django.db import migrations, models

import relay.contrib.http_api.models


class Migration(migrations.Migration):
    dependencies = [("relay_http_api", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="can_send",
            field=models.BooleanField(default=True, help_text="POST /relay/api/send", verbose_name="may send"),
        ),
        # True for the keys that exist (they could read presence), then False for new ones.
        migrations.AddField(
            model_name="apikey",
            name="can_read_presence",
            field=models.BooleanField(default=True),
            preserve_default=False,
        ),
        migrations.AlterField(
            model_name="apikey",
            name="can_read_presence",
            field=models.BooleanField(
                default=False, help_text="GET /relay/api/presence: who is online", verbose_name="may read presence"
            ),
        ),
        migrations.AddField(
            model_name="apikey",
            name="client_ids",
            field=models.CharField(
                blank=True,
                default="",
                help_text="The client ids it may send to and ask about: patterns separated by spaces or commas, "
                "* standing for any characters (e.g. 'user-* 42'). Empty: any client id.",
                max_length=1000,
                validators=[relay.contrib.http_api.models.validate_client_ids],
                verbose_name="client ids",
            ),
            preserve_default=False,
        ),
    ]
