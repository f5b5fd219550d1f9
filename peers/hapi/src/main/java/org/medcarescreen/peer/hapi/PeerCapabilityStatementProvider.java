package org.medcarescreen.peer.hapi;

import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import ca.uhn.fhir.util.FhirTerser;
import org.hl7.fhir.instance.model.api.IBase;
import org.hl7.fhir.r4.model.CapabilityStatement.CapabilityStatementRestComponent;
import org.hl7.fhir.r4.model.CapabilityStatement.SystemRestfulInteraction;

/**
 * HAPI's JPA CapabilityStatement, plus one line.
 *
 * <p>HAPI serves batch and transaction Bundles through the same system-level method, but its
 * CapabilityStatement only lists {@code rest.interaction.code = transaction} (and
 * history-system), never {@code batch}. The peer adds {@code batch} next to {@code transaction}
 * so a client that checks the statement before sending a batch finds it declared. Start the
 * JVM with {@code -Dhapi.peer.stockMetadata=true} (./run: HAPI_PEER_STOCK_METADATA=1) to get
 * HAPI's statement unchanged, as public HAPI servers publish it.
 */
class PeerCapabilityStatementProvider extends JpaCapabilityStatementProvider {

	private final boolean declareBatch = !Boolean.getBoolean("hapi.peer.stockMetadata");

	PeerCapabilityStatementProvider(
			RestfulServer server,
			IFhirSystemDao<?, ?> systemDao,
			JpaStorageSettings storageSettings,
			ISearchParamRegistry searchParamRegistry,
			IValidationSupport validationSupport) {
		super(server, systemDao, storageSettings, searchParamRegistry, validationSupport);
	}

	@Override
	protected void postProcessRest(FhirTerser terser, IBase rest) {
		super.postProcessRest(terser, rest);
		if (declareBatch && rest instanceof CapabilityStatementRestComponent r4Rest) {
			boolean transaction = r4Rest.getInteraction().stream()
					.anyMatch(i -> i.getCode() == SystemRestfulInteraction.TRANSACTION);
			boolean batch = r4Rest.getInteraction().stream()
					.anyMatch(i -> i.getCode() == SystemRestfulInteraction.BATCH);
			if (transaction && !batch) {
				r4Rest.addInteraction().setCode(SystemRestfulInteraction.BATCH);
			}
		}
	}
}
